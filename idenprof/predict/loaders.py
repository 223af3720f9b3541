"""Load a trained or exported model, whatever its format, as one `Predictor`.

    predictor = load_predictor(Path("runs/cpu-96px-seed0/export/model.tflite"))
    probabilities = predictor.predict(pixels)        # uint8/float RGB [N, S, S, 3] -> [N, C]

Backends: Keras (.keras, .h5), TensorFlow SavedModel (a folder), LiteRT (.tflite) and ONNX
Runtime (.onnx). TensorFlow is imported only inside the Keras and SavedModel loaders, so a .tflite
or .onnx model starts without it (docs/BENCHMARKS.md has the cold-start times). The image size
comes from the model's input shape and the class names from the class index JSON next to the
model: neither is typed anywhere else.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from idenprof.class_index import read_class_index
from idenprof.errors import ModelFileError, one_line
from idenprof.run_folder import (
    CLASS_INDEX_FILENAME,
    OUTPUT_KEY,
    PIXELS_SIGNATURE,
)
from idenprof.tf_quiet import import_tensorflow_quietly, native_stderr_silenced

MODEL_FILE_SUFFIXES = (".keras", ".h5", ".tflite", ".onnx")


@dataclass
class Predictor:
    """A loaded model, whatever its format.

    Attributes:
        class_names: class name of each output position.
        image_size: S of the model's input [N, S, S, 3] (pixels).
        predict_batch: float32 RGB 0..255 [N, S, S, 3] -> float32 probabilities [N, C].
        model_path: the file or folder it was loaded from.
    """

    class_names: list[str]
    image_size: int
    predict_batch: Callable[[np.ndarray], np.ndarray]
    model_path: Path

    def predict(self, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
        """Probabilities float32 [N, C] for uint8 or float32 RGB images [N, S, S, 3] (0..255),
        run `batch_size` images at a time."""
        images = np.asarray(images, dtype=np.float32)
        if images.ndim != 4 or images.shape[1:] != (self.image_size, self.image_size, 3):
            raise ValueError(
                f"images must be [N, {self.image_size}, {self.image_size}, 3], got {images.shape}"
            )
        return predict_in_batches(self.predict_batch, images, batch_size, len(self.class_names))


def predict_in_batches(
    predict_batch: Callable[[np.ndarray], np.ndarray], images: np.ndarray, batch_size: int, num_outputs: int
) -> np.ndarray:
    """`predict_batch` (images [n, ...] -> outputs [n, num_outputs]) on `images` [N, ...],
    `batch_size` at a time: float32 [N, num_outputs].

    Keras models pass `model.predict_on_batch`: `model.predict` builds a tf.data iterator per call,
    and destroying it waited seconds at 0% CPU for tf.data's autotuning thread
    (docs/BENCHMARKS.md, "CPU share").
    """
    outputs = [
        np.asarray(predict_batch(images[start : start + batch_size]), dtype=np.float32)
        for start in range(0, len(images), batch_size)
    ]
    if not outputs:
        return np.zeros((0, num_outputs), dtype=np.float32)
    return np.concatenate(outputs)


def load_predictor(model_path: Path, labels_path: Path | None = None) -> Predictor:
    """Load a .keras/.h5/.tflite/.onnx file or a SavedModel folder with its class names.

    Class names come from `labels_path`, else class_index.json next to the model (for a
    SavedModel folder: inside it, else beside it). Raises ModelFileError when the file is not a
    model or the class count differs from the model's output size.
    """
    model_path = Path(model_path)
    labels_path = Path(labels_path) if labels_path is not None else class_index_beside(model_path)
    class_names = read_class_index(labels_path)
    if model_path.is_dir():
        predict_batch, input_shape, num_outputs = load_saved_model(model_path)
    elif model_path.suffix.lower() == ".tflite":
        predict_batch, input_shape, num_outputs = load_litert(model_path)
    elif model_path.suffix.lower() == ".onnx":
        predict_batch, input_shape, num_outputs = load_onnx(model_path)
    elif model_path.suffix.lower() in (".keras", ".h5"):
        predict_batch, input_shape, num_outputs = load_keras(model_path)
    else:
        raise ModelFileError(f"{model_path}: not a model file ({', '.join(MODEL_FILE_SUFFIXES)})")
    if (len(input_shape) != 4 or input_shape[3] != 3 or input_shape[1] != input_shape[2]
            or input_shape[1] is None):
        raise ModelFileError(
            f"{model_path}: expected an image model with input [N, S, S, 3], got {input_shape}"
        )
    if num_outputs != len(class_names):
        raise ModelFileError(
            f"{model_path} has {num_outputs} outputs but {labels_path} names "
            f"{len(class_names)} classes; pass the matching --labels"
        )
    return Predictor(class_names, int(input_shape[1]), predict_batch, model_path)


def class_index_beside(model_path: Path) -> Path:
    if model_path.is_dir() and (model_path / CLASS_INDEX_FILENAME).is_file():
        return model_path / CLASS_INDEX_FILENAME
    return model_path.parent / CLASS_INDEX_FILENAME


def load_keras(path: Path):
    import_tensorflow_quietly()
    import keras

    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as e:  # Keras raises many types for a bad file; all mean "not a model".
        raise ModelFileError(f"{path}: cannot load as a Keras model ({one_line(e)})") from None

    def predict_batch(images: np.ndarray) -> np.ndarray:
        # Calling the model directly avoids predict()'s per-call tf.data and progress overhead.
        return keras.ops.convert_to_numpy(model(images, training=False))

    return predict_batch, tuple(model.input_shape), model.output_shape[-1]


def load_saved_model(path: Path):
    tf = import_tensorflow_quietly()

    try:
        loaded = tf.saved_model.load(str(path))
        signature = loaded.signatures[PIXELS_SIGNATURE]
    except Exception as e:  # a corrupt protobuf or missing variables surface as several types
        raise ModelFileError(f"{path}: cannot load as a SavedModel ({one_line(e)})") from None
    input_name, input_spec = only_entry(signature.structured_input_signature[1], "input", path)
    output_name, output_spec = only_entry(signature.structured_outputs, "output", path)

    def predict_batch(images: np.ndarray) -> np.ndarray:
        return signature(**{input_name: tf.constant(images)})[output_name].numpy()

    return predict_batch, tuple(input_spec.shape), output_spec.shape[-1]


def load_litert(path: Path):
    from ai_edge_litert.interpreter import Interpreter

    try:
        interpreter = Interpreter(model_path=str(path), num_threads=os.cpu_count())
        runner = interpreter.get_signature_runner(PIXELS_SIGNATURE)
    except Exception as e:  # the interpreter raises ValueError/RuntimeError for a bad flatbuffer
        raise ModelFileError(f"{path}: cannot load as a LiteRT model ({one_line(e)})") from None
    input_name, input_details = only_entry(runner.get_input_details(), "input", path)
    output_name, output_details = only_entry(runner.get_output_details(), "output", path)

    first_call = True

    def predict_batch(images: np.ndarray) -> np.ndarray:
        # The signature runner resizes its input tensor to the batch it is given. Its first call
        # creates the XNNPACK delegate, which announces itself on the process's stderr.
        nonlocal first_call
        quiet = native_stderr_silenced() if first_call else contextlib.nullcontext()
        first_call = False
        with quiet:
            return runner(**{input_name: images})[output_name]

    return predict_batch, tuple(input_details["shape_signature"]), output_details["shape"][-1]


def load_onnx(path: Path):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = os.cpu_count() or 1
    options.log_severity_level = 3  # errors only: its graph-optimisation warnings are not ours to act on
    try:
        session = onnxruntime.InferenceSession(
            str(path), options, providers=["CPUExecutionProvider"]
        )
    except Exception as e:  # ONNX Runtime raises its own Fail/InvalidProtobuf types for a bad file
        raise ModelFileError(f"{path}: cannot load as an ONNX model ({one_line(e)})") from None
    input_name, input_arg = only_entry({i.name: i for i in session.get_inputs()}, "input", path)
    output_name, output_arg = only_entry({o.name: o for o in session.get_outputs()}, "output", path)
    if input_arg.type != "tensor(float)":
        raise ModelFileError(f"{path}: expected a float32 pixels input, got {input_arg.type}")
    # Dynamic dimensions are names (the batch is "N"); the image side and class count are ints.
    input_shape = tuple(d if isinstance(d, int) else None for d in input_arg.shape)

    def predict_batch(images: np.ndarray) -> np.ndarray:
        return session.run([output_name], {input_name: images})[0]

    return predict_batch, input_shape, output_arg.shape[-1]


def only_entry(named: dict, kind: str, path: Path):
    """(name, value) of the signature's one input or output. Our exports name the output
    "probabilities"; a plain `model.export()` names it "output_0", which is accepted too."""
    if kind == "output" and OUTPUT_KEY in named:
        return OUTPUT_KEY, named[OUTPUT_KEY]
    if len(named) != 1:
        raise ModelFileError(
            f"{path}: expected one {kind} in signature {PIXELS_SIGNATURE}, found {sorted(named)}"
        )
    return next(iter(named.items()))


