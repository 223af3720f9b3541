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
    POST /api/predict/batch  several `image` fields (at most 32, 40 MB in all by default); query top,
                           tta, coverage -> {"results": [answer or {"error", "status"}, ...]} in
                           order: decoded one at a time, predicted in one model call; a photo that
                           cannot be read gets its error and status, the others their answers

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

from idenprof.data.imaging import ImageError, ImageTooLargeError, NotAnImageError
from idenprof.errors import ModelFileError
from idenprof.predict.classifier import Classifier

STATIC_DIR = Path(__file__).resolve().parents[1] / "static"
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
# /api/predict/batch: at most this many photos per request, and this many times the one-photo limit in all.
DEFAULT_MAX_BATCH_IMAGES = 32
BATCH_BYTES_FACTOR = 4
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
               decode_slots: int = DEFAULT_DECODE_SLOTS, max_waiting: int = DEFAULT_MAX_WAITING,
               max_batch_images: int = DEFAULT_MAX_BATCH_IMAGES, max_batch_bytes: int | None = None) -> FastAPI:
    """The FastAPI app serving `classifier` (already loaded); uploads over `max_upload_bytes`
    are refused with 413; `decode_slots` requests are decoded and predicted at once, and beyond
    `max_waiting` waiting requests the next gets 503. /api/predict/batch takes at most
    `max_batch_images` photos, `max_batch_bytes` in all (default: 4 x `max_upload_bytes`)."""
    max_batch_bytes = max_batch_bytes or BATCH_BYTES_FACTOR * max_upload_bytes
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
        except ImageError as e:  # NotAnImageError and ImageTooLargeError are ImageErrors
            raise ApiError(*image_error(e)) from None
        except ModelFileError as e:
            raise ApiError(501, str(e)) from None
        return answer

    @app.post("/api/predict/batch")
    async def predict_batch(
        request: Request,
        top: int = Query(5, ge=1, description="how many classes, most likely first"),
        tta: bool = Query(False, description="average each photo with its mirror"),
        coverage: float | None = Query(None, gt=0, lt=1, description="coverage of the prediction sets"),
    ):
        uploads = await read_uploads(request, max_upload_bytes, max_batch_bytes, max_batch_images)
        async with admission.slot():
            # One photo decoded at a time (the same peak memory as /api/predict), one model call.
            outcomes = await run_in_threadpool(classifier.predict_each, uploads, len(classifier.class_names), tta)
        results = []
        for outcome in outcomes:
            if isinstance(outcome, Exception):
                status, message = image_error(outcome)
                results.append({"error": message, "status": status})
            else:
                results.append(classifier.prediction_json(outcome, top, coverage))
        return {"results": results}

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


def image_error(error: Exception) -> tuple[int, str]:
    """(HTTP status, one-line message) for a photo that could not be predicted."""
    if isinstance(error, NotAnImageError):
        return 415, "not an image: send a JPEG, PNG, WebP, BMP or GIF photo"
    if isinstance(error, ImageTooLargeError):
        return 413, str(error).replace("<bytes>: ", "")
    return 400, str(error).replace("<bytes>", "unreadable image")


def png_data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


async def read_upload(request: Request, max_upload_bytes: int) -> bytes:
    """The bytes of the multipart field `image`, read from the request stream into memory.

    Refuses (ApiError 413) an image over `max_upload_bytes`: a body whose Content-Length already
    says it is too large before reading any of it, else as soon as the stream passes the limit (a client can
    lie about, or omit, Content-Length). 415 when the body is not multipart/form-data, 422 when
    it has no `image` field, 400 when the multipart framing is broken, its boundary is over 70
    characters, it holds several `image` fields (/api/predict/batch takes those), or the client
    goes away mid-upload.
    """
    return (await read_uploads(request, max_upload_bytes, max_upload_bytes, max_images=1))[0]


async def read_uploads(request: Request, max_upload_bytes: int, max_total_bytes: int, max_images: int) -> list[bytes]:
    """The bytes of every multipart field `image`, in order (see `read_upload`): each at most
    `max_upload_bytes`, all together at most `max_total_bytes`, at most `max_images` of them
    (413 beyond any of these; with `max_images` 1, a second field is a 400)."""
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    boundary = options.get(b"boundary")
    if content_type != b"multipart/form-data" or not boundary:
        raise ApiError(415, f"send the photo as multipart/form-data in the field {IMAGE_FIELD!r}")
    if len(boundary) > MAX_BOUNDARY_CHARS:
        raise ApiError(400, f"malformed multipart body (a boundary of {len(boundary)} characters; "
                            f"at most {MAX_BOUNDARY_CHARS})")
    max_body_bytes = max_total_bytes + max_images * MULTIPART_OVERHEAD_BYTES
    too_large = ApiError(413, f"upload larger than the {max_upload_bytes / 2**20:g} MB limit")
    too_large_in_all = ApiError(413, f"uploads larger than the {max_total_bytes / 2**20:g} MB limit for one request")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_body_bytes:
        raise too_large if max_images == 1 else too_large_in_all

    images: list[bytearray] = []
    current = {"header": b"", "value": b"", "name": None, "total": 0}

    def on_header_field(data, start, end):
        current["header"] += data[start:end]

    def on_header_value(data, start, end):
        current["value"] += data[start:end]

    def on_header_end():
        if current["header"].lower() == b"content-disposition":
            current["name"] = parse_options_header(current["value"])[1].get(b"name", b"").decode(
                "utf-8", "replace")
            if current["name"] == IMAGE_FIELD:  # an empty upload is still an upload
                if len(images) == max_images:
                    if max_images == 1:
                        raise ApiError(400, f"several {IMAGE_FIELD!r} fields; send one photo per request "
                                            "(or several to /api/predict/batch)")
                    raise ApiError(413, f"more than {max_images} photos in one request; send them in batches")
                images.append(bytearray())
        current["header"], current["value"] = b"", b""

    def on_part_begin():
        current["name"] = None

    def on_part_data(data, start, end):
        if current["name"] == IMAGE_FIELD:
            images[-1].extend(data[start:end])
            current["total"] += end - start
            if len(images[-1]) > max_upload_bytes:
                raise too_large
            if current["total"] > max_total_bytes:
                raise too_large_in_all

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
                raise too_large if max_images == 1 else too_large_in_all
            parser.write(chunk)
        parser.finalize()
    except (MultipartParseError, FormParserError) as e:
        raise ApiError(400, f"malformed multipart body ({e})") from None
    except ClientDisconnect:
        # Nobody is left to read an answer; a quiet 400 instead of a logged traceback.
        raise ApiError(400, "the client went away before the upload ended") from None
    if not images:
        raise ApiError(422, f"no {IMAGE_FIELD!r} field in the form; send the photo in it")
    return [bytes(image) for image in images]
