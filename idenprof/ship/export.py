"""Export a trained model for deployment: Keras, HDF5, TensorFlow SavedModel, LiteRT and ONNX.

    export/
        model.keras        Keras 3 native format (keras.models.load_model)
        model.h5           legacy HDF5, as the original IdenProf code saved
        saved_model/       TensorFlow Serving: signatures serving_default (pixels) and
                           serving_bytes (encoded image files), both -> {"probabilities"}
        model.tflite       LiteRT, float32; infer.py runs it without importing TensorFlow
        model.int8.tflite  LiteRT, the network in int8 (a quarter of the size, faster on CPUs), its
                           head from the pooled features on in float32, float32 pixels in and
                           probabilities out; only when asked for, as it needs representative
                           photos to set its value ranges
        model.onnx         ONNX, float32, input "pixels" -> output "probabilities";
                           infer.py runs it with ONNX Runtime, without importing TensorFlow
        class_index.json   output position -> class name, for all of the above

Every format takes float32 RGB pixels 0..255 (preprocessing is inside the model) and returns
float32 softmax probabilities [N, num_classes] in class index order. All exports compute in
float32 (but the int8 one), even when training used mixed precision: LiteRT has no bfloat16
kernels, and float32 runs everywhere.

Keras' own `Model.export(format="litert" | "onnx")` runs the same converters (TFLiteConverter from
a SavedModel written by ExportArchive; tf2onnx), and its converter options cover int8. It is not
used because of the interface: it exports `model.__call__` as the endpoint `serve`, names the
input after an internal tensor and the output `output_0`, and enables SELECT_TF_OPS, while every
format here answers to one contract, `pixels` -> `probabilities` in `serving_default`, the same as
the SavedModel that TensorFlow Serving loads.

Each file appears under its final name only when complete: it is written in a hidden staging
folder inside `out_dir` and moved into place with os.replace (a rename on the same filesystem).
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import warnings
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from idenprof.class_index import write_class_index
from idenprof.data.graph_imaging import decode_resized
from idenprof.errors import ConfigError
from idenprof.files import move_into_place
from idenprof.precision import float32_copy
from idenprof.predict.calibration import LOGITS_LAYER
from idenprof.run_folder import (
    BYTES_SIGNATURE,
    CLASS_INDEX_FILENAME,
    EXPORT_FILENAMES,
    OUTPUT_KEY,
    PIXELS_INPUT,
    PIXELS_SIGNATURE,
)
from idenprof.tf_quiet import native_stderr_silenced

FORMATS = tuple(EXPORT_FILENAMES)
DEFAULT_FORMATS = tuple(f for f in FORMATS if f != "tflite_int8")
ONNX_OPSET = 17
# Photos whose activations set the int8 model's value ranges: 200 from the training split measured
# the same top-1 as more (TensorFlow's guide suggests a few hundred).
REPRESENTATIVE_IMAGES = 200


def representative_photos(layout, samples: list, image_size: int, seed: int) -> np.ndarray:
    """Pixels [N, S, S, 3] of REPRESENTATIVE_IMAGES `samples` (the training split's) drawn with
    `seed`, for the int8 export."""
    rng = np.random.default_rng(seed)
    chosen = sorted(rng.choice(len(samples), min(REPRESENTATIVE_IMAGES, len(samples)), replace=False))
    return layout.decode([samples[i] for i in chosen], image_size, progress=False).images


def export_model(
    model: keras.Model,
    out_dir: Path,
    class_names: list[str],
    formats: tuple[str, ...] = DEFAULT_FORMATS,
    tflite_float16: bool = False,
    representative: np.ndarray | None = None,
) -> dict[str, Path]:
    """Write `model` in each of `formats` plus class_index.json into `out_dir`.

    Args:
        model: a Functional model, input float32 RGB [None, S, S, 3] 0..255, output softmax
            [None, len(class_names)].
        out_dir: created if missing; existing exports of the same names are replaced.
        class_names: class name of each output position.
        formats: any of FORMATS ("keras", "h5", "saved_model", "tflite", "onnx", "tflite_int8").
        tflite_float16: store the LiteRT model's weights in float16 (half the size; it still
            computes and answers in float32).
        representative: float32 pixels [N, S, S, 3] of training photos, needed by "tflite_int8"
            (see REPRESENTATIVE_IMAGES).

    Returns:
        {format: path} for each format written, plus "class_index".
    """
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ConfigError(f"unknown export format(s) {unknown}; choose from {', '.join(FORMATS)}")
    num_outputs = model.output_shape[-1]
    if num_outputs != len(class_names):
        raise ConfigError(
            f"the model has {num_outputs} outputs but {len(class_names)} class names were given"
        )
    if "tflite_int8" in formats and (representative is None or not len(representative)):
        raise ConfigError("the int8 LiteRT export needs representative training photos")
    model = float32_copy(model)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    staging = Path(tempfile.mkdtemp(dir=out_dir, prefix=".export-"))
    try:
        for fmt in formats:
            staged = staging / EXPORT_FILENAMES[fmt]
            if fmt in ("keras", "h5"):
                save_model(model, staged)
            elif fmt == "saved_model":
                write_saved_model(model, staged)
            elif fmt == "onnx":
                staged.write_bytes(onnx_bytes(model))
            elif fmt == "tflite_int8":
                staged.write_bytes(tflite_bytes(model, staging, int8_representative=representative))
            else:
                staged.write_bytes(tflite_bytes(model, staging, float16_weights=tflite_float16))
            name = EXPORT_FILENAMES[fmt]
            written[fmt] = move_into_place(staged, out_dir / name, staging / f"old-{name}")
        written["class_index"] = write_class_index(class_names, out_dir / CLASS_INDEX_FILENAME)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return written


@contextlib.contextmanager
def absl_warnings_silenced():
    from absl import logging as absl_logging

    before = absl_logging.get_verbosity()
    absl_logging.set_verbosity(absl_logging.ERROR)
    try:
        yield
    finally:
        absl_logging.set_verbosity(before)


def save_model(model: keras.Model, path: Path) -> None:
    """`model.save(path)`, .keras or .h5 by the suffix. Keras warns that .h5 is legacy at every
    save; we write it on purpose (the original code did), so that warning is not shown."""
    if Path(path).suffix != ".h5":
        model.save(path)
        return
    with warnings.catch_warnings(), absl_warnings_silenced():
        warnings.simplefilter("ignore")
        model.save(path)


def serving_functions(model: keras.Model):
    """The two serving tf.functions: pixels float32 [None, S, S, 3] and encoded images string
    [None]; both return {"probabilities": float32 [None, C]}."""
    size = model.input_shape[1]

    @tf.function(input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32, name=PIXELS_INPUT)])
    def serve_pixels(pixels):
        return {OUTPUT_KEY: tf.cast(model(pixels, training=False), tf.float32)}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="images")])
    def serve_bytes(images):
        # The same pixels as idenprof.data.imaging.load_image_rgb (see data/graph_imaging.py).
        pixels = tf.map_fn(
            lambda encoded: decode_resized(encoded, size), images,
            fn_output_signature=tf.TensorSpec([size, size, 3], tf.float32),
        )
        return serve_pixels(pixels)

    return serve_pixels, serve_bytes


def write_saved_model(model: keras.Model, path: Path) -> None:
    """A SavedModel with the `serving_default` (pixels) and `serving_bytes` signatures."""
    serve_pixels, serve_bytes = serving_functions(model)
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(PIXELS_SIGNATURE, serve_pixels)
    archive.add_endpoint(BYTES_SIGNATURE, serve_bytes)
    archive.write_out(str(path), verbose=False)


def tflite_bytes(model: keras.Model, scratch: Path, float16_weights: bool = False,
                 int8_representative: np.ndarray | None = None) -> bytes:
    """A LiteRT flatbuffer with one signature, `serving_default`: pixels -> probabilities, float32.
    With `float16_weights`, weights are stored in float16 and dequantized when loaded. With
    `int8_representative` (pixels [N, S, S, 3]), the network up to its pooled features runs in int8
    (ranges from those photos) and the head after them in float32 (see `head_tensor_names`).

    Converted from a pixels-only SavedModel: the decode ops of serving_bytes have no LiteRT
    kernels, and the SavedModel path is the converter's supported route for Keras 3 models.
    """
    pixels_only = scratch / "tflite-source"
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(PIXELS_SIGNATURE, serving_functions(model)[0])
    archive.write_out(str(pixels_only), verbose=False)
    converter = tf.lite.TFLiteConverter.from_saved_model(
        str(pixels_only), signature_keys=[PIXELS_SIGNATURE]
    )
    if float16_weights:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    if int8_representative is None:
        return converter.convert()
    head = head_tensor_names(converter.convert())
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    photos = lambda: ({PIXELS_INPUT: image[None].astype(np.float32)} for image in int8_representative)  # noqa: E731
    converter.representative_dataset = photos
    # Selective quantization (TensorFlow's QuantizationDebugger): the head stays float32. Its
    # distances and scales span ranges that int8 cannot hold (an untrained model's made LiteRT
    # abort), and the probabilities keep their precision.
    # The quantizer prints its settings at every conversion, the debugger warns that it runs
    # tf.lite.Interpreter (deprecated for LiteRT's, which the project itself uses).
    with absl_warnings_silenced(), native_stderr_silenced(), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        debugger = tf.lite.experimental.QuantizationDebugger(
            converter=converter, debug_dataset=photos,
            debug_options=tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=head))
        return debugger.get_nondebug_quantized_model()


def head_tensor_names(float_flatbuffer: bytes) -> list[str]:
    """Output tensor names of the LiteRT operations that compute from the pooled features (the
    input of the Dense layer `predictions`) onwards: the head. [] without such a layer."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=float_flatbuffer)
    tensors = interpreter.get_tensor_details()
    operations = interpreter._get_ops_details()  # in execution order, inputs before their users
    logits = [op for op in operations if op["op_name"] == "FULLY_CONNECTED"
              and any(LOGITS_LAYER in tensors[i]["name"] for i in op["outputs"])]
    if not logits:
        return []
    reached, names = {int(logits[0]["inputs"][0])}, []
    for op in operations:
        if reached & {int(i) for i in op["inputs"]}:
            reached |= {int(i) for i in op["outputs"]}
            names += [tensors[i]["name"] for i in op["outputs"]]
    return names


def onnx_bytes(model: keras.Model) -> bytes:
    """A float32 ONNX model: input "pixels" float32 [N, S, S, 3] 0..255, output "probabilities"
    float32 [N, C], the interface of serving_default.

    tf2onnx converts the same pixels tf.function the SavedModel serves (a concrete TensorFlow
    graph, so Keras 3 layers need no converter support of their own).
    """
    import tf2onnx

    serve_pixels = serving_functions(model)[0]
    with absl_warnings_silenced():
        proto, _ = tf2onnx.convert.from_function(
            serve_pixels, input_signature=serve_pixels.input_signature, opset=ONNX_OPSET
        )
    for value in (*proto.graph.input, *proto.graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = "N"  # tf2onnx names it unk__123
    return proto.SerializeToString()
