"""The web service: one page to try the model in a browser, and a JSON API, over one Classifier.

    app = create_app(idenprof.load())         # serve with uvicorn (python serve.py does)

    GET  /                 the page (idenprof/static/: plain HTML, CSS and JS, no outside requests)
    GET  /healthz          200 {"status": "ok", ...} (the model is loaded before the app exists)
    POST /api/predict      multipart field `image`; query top=5, tta=false, heatmap=false, class=NAME,
                           coverage=0.9
                           -> {"predictions": [{"class", "probability"}, ...], "unsure": bool,
                               "none_score": 0..1, "none_of_these": bool,
                               "prediction_set": {"classes": [...], "coverage": 0.9} or null}
                              as `infer.py --json` prints for one image, plus with heatmap=true
                              "heatmap" (PNG data URL) and "heatmap_class"

Errors are JSON {"error": "..."}: 400 unreadable image, 413 upload over the limit (refused from
Content-Length before reading, else as soon as the stream passes it) or an image with too many
pixels (refused from its header, not decoded), 415 not an image (or not multipart), 422 bad
parameters, 501 heat map without a Keras model, 503 (with Retry-After) when too many photos are
waiting: one photo is decoded and predicted at a time, which bounds the server's memory. Uploads
stay in memory, never on disk; model calls run in a thread pool, so a slow upload does not hold up
other requests.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from pathlib import Path

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from python_multipart.exceptions import FormParserError, MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from idenprof.classifier import Classifier
from idenprof.data.imaging import ImageError, ImageTooLargeError, NotAnImageError
from idenprof.errors import ModelFileError

STATIC_DIR = Path(__file__).resolve().parent / "static"
DEFAULT_MAX_UPLOAD_BYTES = 10 * 1024 * 1024
IMAGE_FIELD = "image"
# Room for the multipart boundaries and part headers around an upload of the maximum size.
MULTIPART_OVERHEAD_BYTES = 16 * 1024
# Photos decoded and predicted at once: a legal 8000x8000 PNG takes about 0.5 GB to decode, so
# concurrent decodes, not model calls, set the server's peak memory (docs/BENCHMARKS.md).
DEFAULT_DECODE_SLOTS = 1
# Requests waiting for a slot beyond this get 503 with Retry-After instead of piling up.
DEFAULT_MAX_WAITING = 32
RETRY_AFTER_S = 2
# RFC 2046: a multipart boundary has 1 to 70 characters.
MAX_BOUNDARY_CHARS = 70
# The page may load only what this server sends: no CDN, fonts or analytics, even by mistake; and
# no other site may frame it. Sent on every response, with nosniff, so no path serves the page bare.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {"Content-Security-Policy": CONTENT_SECURITY_POLICY, "X-Content-Type-Options": "nosniff"}


class Admission:
    """At most `slots` requests decode and predict at once; at most `max_waiting` wait for a slot,
    and the next one is refused (ApiError 503)."""

    def __init__(self, slots: int = DEFAULT_DECODE_SLOTS, max_waiting: int = DEFAULT_MAX_WAITING):
        self.semaphore = asyncio.Semaphore(slots)
        self.max_waiting = max_waiting
        self.waiting = 0

    @contextlib.asynccontextmanager
    async def slot(self):
        if self.semaphore.locked() and self.waiting >= self.max_waiting:
            raise ApiError(503, f"busy: {self.waiting} photos are waiting; try again in a few seconds")
        self.waiting += 1
        try:
            await self.semaphore.acquire()
        finally:
            self.waiting -= 1
        try:
            yield
        finally:
            self.semaphore.release()


class ApiError(Exception):
    """A request the API refuses: HTTP `status` and a one-line message for {"error": ...}."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def create_app(classifier: Classifier, max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
               decode_slots: int = DEFAULT_DECODE_SLOTS, max_waiting: int = DEFAULT_MAX_WAITING) -> FastAPI:
    """The FastAPI app serving `classifier` (already loaded); uploads over `max_upload_bytes`
    are refused with 413; `decode_slots` photos are decoded and predicted at once, and beyond
    `max_waiting` waiting requests the next gets 503."""
    admission = Admission(decode_slots, max_waiting)
    app = FastAPI(title="idenprof", docs_url=None, redoc_url=None, openapi_url=None)
    # No redirect from /static to /static/: Starlette builds it from the request's Host header,
    # which a client chooses.
    app.router.redirect_slashes = False

    @app.middleware("http")
    async def security_headers(request: Request, call_next):
        response = await call_next(request)
        response.headers.update(SECURITY_HEADERS)
        return response

    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError):
        # After a 413 the rest of the body is unread: closing the connection stops the client
        # sending it (otherwise the server would have to receive and discard it all).
        headers = {"Connection": "close"} if error.status == 413 else None
        if error.status == 503:
            headers = {"Retry-After": str(RETRY_AFTER_S)}
        return JSONResponse({"error": error.message}, status_code=error.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def bad_parameters(request: Request, error: RequestValidationError):
        problems = [
            f"{'.'.join(str(part) for part in e['loc'][1:])}: {e['msg']}" for e in error.errors()
        ]
        return JSONResponse({"error": "; ".join(problems)}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException):
        return JSONResponse({"error": str(error.detail)}, status_code=error.status_code)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception):
        return JSONResponse({"error": f"internal error: {type(error).__name__}"}, status_code=500)

    @app.get("/healthz")
    async def healthz():
        return {
            "status": "ok",
            "model": classifier.model_path.name,
            "classes": classifier.class_names,
            "min_confidence": classifier.min_confidence,
            "none_threshold": classifier.none_threshold,
            "coverage": classifier.coverage if classifier.conformal is not None else None,
            "heatmaps": classifier.heatmap_model_path is not None,
        }

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(STATIC_DIR / "index.html")

    @app.post("/api/predict")
    async def predict(
        request: Request,
        top: int = Query(5, ge=1, description="how many classes, most likely first"),
        tta: bool = Query(False, description="average the photo with its mirror"),
        heatmap: bool = Query(False, description="add a Grad-CAM heat map as a PNG data URL"),
        class_name: str | None = Query(None, alias="class", description="heat map class"),
        coverage: float | None = Query(None, gt=0, lt=1, description="coverage of the prediction set "
                                       "(default: the server's, 0.9)"),
    ):
        if class_name is not None and class_name not in classifier.class_names:
            raise ApiError(422, f"class: unknown class {class_name!r}; the model knows "
                                f"{', '.join(classifier.class_names)}")
        if heatmap and classifier.heatmap_model_path is None:
            raise ApiError(501, f"heat maps need a Keras model (.keras) beside "
                                f"{classifier.model_path.name}; this server has none")
        upload = await read_upload(request, max_upload_bytes)
        try:
            async with admission.slot():
                # Every class: the prediction set may reach past the top shown.
                predictions = await run_in_threadpool(classifier.predict, upload, len(classifier.class_names), tta)
                answer = classifier.prediction_json(predictions, top, coverage)
                if heatmap:
                    heat = await run_in_threadpool(classifier.heatmap, upload, class_name)
                    answer["heatmap"] = png_data_url(heat.png)
                    answer["heatmap_class"] = heat.class_name
        except NotAnImageError:
            raise ApiError(415, "not an image: send a JPEG, PNG, WebP, BMP or GIF photo") from None
        except ImageTooLargeError as e:
            raise ApiError(413, str(e).replace("<bytes>: ", "")) from None
        except ImageError as e:
            raise ApiError(400, str(e).replace("<bytes>", "unreadable image")) from None
        except ModelFileError as e:
            raise ApiError(501, str(e)) from None
        return answer

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


def png_data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


async def read_upload(request: Request, max_upload_bytes: int) -> bytes:
    """The bytes of the multipart field `image`, read from the request stream into memory.

    Refuses (ApiError 413) an image over `max_upload_bytes`: a body whose Content-Length already
    says it is too large before reading any of it, else as soon as the stream passes the limit (a client can
    lie about, or omit, Content-Length). 415 when the body is not multipart/form-data, 422 when
    it has no `image` field, 400 when the multipart framing is broken, its boundary is over 70
    characters, it holds several `image` fields, or the client goes away mid-upload.
    """
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    boundary = options.get(b"boundary")
    if content_type != b"multipart/form-data" or not boundary:
        raise ApiError(415, f"send the photo as multipart/form-data in the field {IMAGE_FIELD!r}")
    if len(boundary) > MAX_BOUNDARY_CHARS:
        raise ApiError(400, f"malformed multipart body (a boundary of {len(boundary)} characters; "
                            f"at most {MAX_BOUNDARY_CHARS})")
    max_body_bytes = max_upload_bytes + MULTIPART_OVERHEAD_BYTES
    too_large = ApiError(413, f"upload larger than the {max_upload_bytes / 2**20:g} MB limit")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_body_bytes:
        raise too_large

    fields: dict[str, bytearray] = {}
    current = {"header": b"", "value": b"", "name": None}

    def on_header_field(data, start, end):
        current["header"] += data[start:end]

    def on_header_value(data, start, end):
        current["value"] += data[start:end]

    def on_header_end():
        if current["header"].lower() == b"content-disposition":
            current["name"] = parse_options_header(current["value"])[1].get(b"name", b"").decode(
                "utf-8", "replace")
            if current["name"] == IMAGE_FIELD:  # an empty upload is still an upload
                if IMAGE_FIELD in fields:
                    raise ApiError(400, f"several {IMAGE_FIELD!r} fields; send one photo per request")
                fields.setdefault(IMAGE_FIELD, bytearray())
        current["header"], current["value"] = b"", b""

    def on_part_begin():
        current["name"] = None

    def on_part_data(data, start, end):
        if current["name"] == IMAGE_FIELD:
            image = fields.setdefault(IMAGE_FIELD, bytearray())
            image.extend(data[start:end])
            if len(image) > max_upload_bytes:
                raise too_large

    parser = MultipartParser(boundary, {
        "on_header_field": on_header_field, "on_header_value": on_header_value,
        "on_header_end": on_header_end, "on_part_begin": on_part_begin,
        "on_part_data": on_part_data,
    })
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > max_body_bytes:
                raise too_large
            parser.write(chunk)
        parser.finalize()
    except (MultipartParseError, FormParserError) as e:
        raise ApiError(400, f"malformed multipart body ({e})") from None
    except ClientDisconnect:
        # Nobody is left to read an answer; a quiet 400 instead of a logged traceback.
        raise ApiError(400, "the client went away before the upload ended") from None
    if IMAGE_FIELD not in fields:
        raise ApiError(422, f"no {IMAGE_FIELD!r} field in the form; send the photo in it")
    return bytes(fields[IMAGE_FIELD])
