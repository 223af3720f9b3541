"""Grad-CAM heat maps: where in a photo the model finds evidence for a class.

    cam = GradCam.from_file("model.keras")(pixels, [class_index])   # float32 [N, h, w], 0..1
    png = overlay_png(photo, cam[0])                                  # the photo with the map

Selvaraju et al. 2017: the last convolutional stage's feature maps A [h, w, K], each weighted by
the mean gradient of the class score over it, summed and clipped at zero. The class score is the
logit (pre-softmax) when the model ends in softmax (a softmax Dense layer, as ours and
keras.applications' do, or a calibrated model's softmax layer); otherwise the log-probability.
Needs the Keras model: LiteRT and SavedModels give no gradients here.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from idenprof.tf_quiet import import_tensorflow_quietly

# Before Keras: TensorFlow's native start-up chatter stays off the terminal.
tf = import_tensorflow_quietly()

import keras  # noqa: E402

from idenprof.errors import ModelFileError, one_line  # noqa: E402
from idenprof.precision import float32_copy  # noqa: E402

HEAT_ALPHA = 0.5  # how much of the heat colour covers the photo where the map is hottest
COLORMAP = "jet"


def last_conv_layer(model: keras.Model) -> keras.layers.Layer:
    """The last layer with a 4-D output [N, h, w, K]: the end of the last convolutional stage,
    just before global pooling (`conv5_block2_out` in a ResNet-18, `relu` in a DenseNet)."""
    for layer in reversed(model.layers):
        if isinstance(layer, keras.layers.InputLayer):
            break
        if len(layer.output.shape) == 4:
            return layer
    raise ModelFileError(f"model {model.name} has no convolutional layer for a heat map")


class GradCam:
    """Grad-CAM for one Keras Functional model; call it with pixels and class indices."""

    def __init__(self, model: keras.Model):
        model = float32_copy(model)  # bfloat16 gradients are too coarse for a smooth map
        self.layer = last_conv_layer(model)
        head = model.layers[-1]
        # The class score: the logits. From a softmax Dense head (ours, keras.applications): its
        # input features times its kernel; from a separate softmax layer (a calibrated model's
        # `probabilities`): its input; else the log of the output probabilities.
        self.head = head if is_softmax(head) and isinstance(head, keras.layers.Dense) else None
        self.logits_in = is_softmax(head) and self.head is None
        score_input = head.input if is_softmax(head) else model.output
        self.model = keras.Model(model.inputs, [self.layer.output, score_input])

    @classmethod
    def from_file(cls, path: Path) -> GradCam:
        try:
            model = keras.models.load_model(path, compile=False)
        except Exception as e:  # Keras raises many types for a bad file; all mean "not a model".
            raise ModelFileError(f"{path}: cannot load as a Keras model ({one_line(e)})") from None
        return cls(model)

    def __call__(self, pixels: np.ndarray, class_indices: list[int]) -> np.ndarray:
        """Heat maps float32 [N, h, w] in 0..1 (1 at each map's maximum; all 0 when nothing
        supports the class) for float RGB pixels [N, S, S, 3] 0..255 and one class per image."""
        pixels = tf.constant(np.asarray(pixels, np.float32))
        indices = tf.constant(np.asarray(class_indices, np.int32))
        return self._maps(pixels, indices).numpy()

    @tf.function(reduce_retracing=True)  # a graph: several times faster than eager layer calls
    def _maps(self, pixels, indices):
        with tf.GradientTape() as tape:
            features, score_input = self.model(pixels, training=False)
            if self.head is not None:
                scores = tf.matmul(score_input, self.head.kernel) + self.head.bias
            elif self.logits_in:
                scores = score_input
            else:
                scores = tf.math.log(score_input + 1e-12)
            score = tf.gather(scores, indices, axis=1, batch_dims=1)
        gradients = tape.gradient(score, features)
        weights = tf.reduce_mean(gradients, axis=(1, 2), keepdims=True)  # [N, 1, 1, K]
        cams = tf.nn.relu(tf.reduce_sum(weights * features, axis=-1))  # [N, h, w]
        peaks = tf.reduce_max(cams, axis=(1, 2), keepdims=True)
        return tf.math.divide_no_nan(cams, peaks)


def is_softmax(layer: keras.layers.Layer) -> bool:
    """Whether a Dense or Activation layer applies softmax."""
    return getattr(layer, "activation", None) is keras.activations.softmax


def upsample(cam: np.ndarray, width: int, height: int) -> np.ndarray:
    """A heat map [h, w] resized bilinearly to [height, width] (float32, same range)."""
    image = Image.fromarray(np.asarray(cam, np.float32), mode="F")
    return np.asarray(image.resize((width, height), Image.BILINEAR), np.float32)


def overlay_png(photo: np.ndarray, cam: np.ndarray) -> bytes:
    """PNG bytes: `photo` (uint8 RGB [H, W, 3]) with `cam` ([h, w], 0..1) upsampled to it and
    drawn over it in the colour map, more opaque where the map is hotter."""
    from matplotlib import colormaps

    height, width = photo.shape[:2]
    heat = np.clip(upsample(cam, width, height), 0, 1)
    colours = colormaps[COLORMAP](heat)[..., :3] * 255  # [H, W, 3]
    alpha = (HEAT_ALPHA * (0.3 + 0.7 * heat))[..., None]
    blended = (1 - alpha) * photo + alpha * colours
    buffer = io.BytesIO()
    Image.fromarray(np.clip(blended, 0, 255).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def centre_of_mass(cam: np.ndarray) -> tuple[float, float]:
    """(x, y) of a heat map [h, w] as fractions of its width and height (0..1)."""
    height, width = cam.shape
    total = float(cam.sum())
    if total <= 0:
        return 0.5, 0.5
    ys, xs = np.mgrid[0:height, 0:width]
    return (float((cam * (xs + 0.5)).sum() / total / width),
            float((cam * (ys + 0.5)).sum() / total / height))
