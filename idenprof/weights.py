"""Transfer learning from the ImageNet weights keras.applications publishes for ResNet50/101/152.

The weights file is fetched and cached by Keras' own `keras.utils.get_file` (under $KERAS_HOME,
default ~/.keras) with its hash check. The origin can point at a mirror or a local file.
"""

from __future__ import annotations

from pathlib import Path

from idenprof.errors import DownloadError, one_line

# From keras/src/applications/resnet.py: where keras.applications' weights live and their hashes.
IMAGENET_BASE_URL = "https://storage.googleapis.com/tensorflow/keras-applications/resnet/"
IMAGENET_NOTOP_MD5 = {
    "resnet50": "4d473c1dd8becc155b73f8504c6f6626",
    "resnet101": "88cf7a10940856eca736dc7b7e228a21",
    "resnet152": "ee4c566cf9a93f14d82f913c2dc6dd0c",
}


def imagenet_notop_filename(model_name: str) -> str:
    return f"{model_name}_weights_tf_dim_ordering_tf_kernels_notop.h5"


def fetch_imagenet_weights(
    model_name: str, origin: str | None = None, file_hash: str | None = None, cache_dir: str | None = None
) -> Path:
    """Path to the no-top ImageNet weights for `model_name`, a key of IMAGENET_NOTOP_MD5
    (downloaded once, then cached).

    `origin`: a mirror URL or a local file (default: keras.applications' URL). `file_hash`: MD5 or
    SHA-256 to check (default: keras.applications' published hash of the file). `cache_dir`:
    where Keras caches it (default: $KERAS_HOME, else ~/.keras).
    """
    import keras

    if origin and Path(origin).is_file():
        return Path(origin)
    filename = imagenet_notop_filename(model_name)
    url = origin or IMAGENET_BASE_URL + filename
    try:
        path = keras.utils.get_file(
            filename, url, file_hash=file_hash or IMAGENET_NOTOP_MD5[model_name],
            cache_subdir="models", cache_dir=cache_dir,
        )
    except Exception as e:  # get_file wraps every network and hash failure in a plain Exception
        raise DownloadError(
            f"could not fetch ImageNet weights from {url} ({one_line(e)}); "
            f"download {filename} yourself and pass --weights-origin /path/to/{filename}"
        ) from None
    return Path(path)


def imagenet_classifier(model_name: str, num_classes: int, side: int | None):
    """The keras.applications-compatible network `model_name` without weights: caffe-style
    preprocessing inside (what the ImageNet weights expect), global average pooling and a new
    float32 softmax head `predictions` for `num_classes`. Input [N, side, side, 3]; side None
    leaves it open."""
    import keras

    from models import build_model

    base = build_model(
        model_name, include_top=False, input_shape=(side, side, 3), pooling="avg", preprocessing="caffe"
    )
    outputs = keras.layers.Dense(num_classes, activation="softmax", dtype="float32", name="predictions")(base.output)
    return keras.Model(base.input, outputs, name=base.name)


def load_imagenet_weights(model, config, cache_dir: str | None = None) -> None:
    """Fetch (once; then cached) and load the ImageNet weights into `model`, an
    `imagenet_classifier` of `config.model`; the head keeps its initialisation."""
    import keras

    weights_path = fetch_imagenet_weights(config.model, config.weights_origin, config.weights_hash, cache_dir)
    # The no-top file lists the layers up to the pooling, in order: load it into that view.
    base = keras.Model(model.input, model.get_layer("avg_pool").output)
    try:
        base.load_weights(str(weights_path))
    except Exception as e:  # a wrong or damaged file: Keras raises ValueError/OSError/KeyError
        raise DownloadError(
            f"{weights_path} does not hold {config.model} ImageNet weights ({one_line(e)}); "
            "delete it and run again, or pass the right file with --weights-origin"
        ) from None
