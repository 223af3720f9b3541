"""--weights imagenet: fetched through Keras' get_file from a loopback mirror, loaded, new head."""

from __future__ import annotations

import hashlib

import h5py
import keras
import numpy as np
import pytest
from http_server import serve_files
from keras.src.legacy.saving.legacy_h5_format import save_weights_to_hdf5_group

from idenprof.config import resolve_config
from idenprof.errors import ConfigError, DownloadError
from idenprof.weights import imagenet_classifier, imagenet_notop_filename, load_imagenet_weights

FILENAME = imagenet_notop_filename("resnet50")


@pytest.fixture(scope="module")
def notop_weights(tmp_path_factory):
    """A keras.applications ResNet50 no-top weights file in the published (legacy .h5) format,
    with random weights: the real file is 94 MB and behind the internet."""
    reference = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(32, 32, 3))
    path = tmp_path_factory.mktemp("weights") / FILENAME
    with h5py.File(path, "w") as f:
        save_weights_to_hdf5_group(f, reference)
    return path, reference


def transfer_config(**overrides):
    return resolve_config(None, {"model": "resnet50", "weights": "imagenet", "image_size": 32, **overrides})


def build_from_imagenet(config, num_classes, cache_dir=None):
    """What training does: build the network, then load the ImageNet weights into it."""
    model = imagenet_classifier(config.model, num_classes, config.image_size)
    load_imagenet_weights(model, config, cache_dir=cache_dir)
    return model


def test_weights_come_from_the_mirror_once_and_load_with_caffe_preprocessing(notop_weights, tmp_path):
    path, reference = notop_weights
    sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
    with serve_files({"/" + FILENAME: path}) as base_url:
        config = transfer_config(weights_origin=f"{base_url}/{FILENAME}", weights_hash=sha256)
        model = build_from_imagenet(config, num_classes=10, cache_dir=str(tmp_path))
        assert [method for method, _, _ in base_url.log] == ["GET"]
        build_from_imagenet(config, num_classes=10, cache_dir=str(tmp_path))
        assert len(base_url.log) == 1  # cached by get_file: no second download
    assert (tmp_path / "models" / FILENAME).is_file()
    for name in ("conv1_conv", "conv3_block2_2_conv", "conv5_block3_3_bn"):
        pairs = zip(model.get_layer(name).get_weights(), reference.get_layer(name).get_weights(), strict=True)
        for ours, theirs in pairs:
            np.testing.assert_array_equal(ours, theirs)
    assert any(layer.name.startswith("preprocess_mean") for layer in model.layers)
    head = model.get_layer("predictions")
    assert head.units == 10 and model.output.dtype == "float32"
    probs = model.predict(np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)), verbose=0)
    assert probs.shape == (2, 10) and np.allclose(probs.sum(axis=1), 1, atol=1e-5)


def test_a_file_with_the_wrong_hash_is_refused(notop_weights, tmp_path):
    path, _ = notop_weights
    with serve_files({"/" + FILENAME: path}) as base_url:
        config = transfer_config(weights_origin=f"{base_url}/{FILENAME}", weights_hash="0" * 64)
        with pytest.raises(DownloadError, match="could not fetch ImageNet weights"):
            build_from_imagenet(config, num_classes=10, cache_dir=str(tmp_path))


def test_a_local_weights_file_and_an_unreachable_mirror(notop_weights, tmp_path):
    path, reference = notop_weights
    model = build_from_imagenet(transfer_config(weights_origin=str(path)), num_classes=3)
    np.testing.assert_array_equal(model.get_layer("conv1_conv").get_weights()[0],
                                  reference.get_layer("conv1_conv").get_weights()[0])
    with pytest.raises(DownloadError, match="--weights-origin"):
        build_from_imagenet(transfer_config(weights_origin="http://127.0.0.1:9/none.h5"), 10, cache_dir=str(tmp_path))


def test_imagenet_weights_only_for_the_published_networks():
    with pytest.raises(ConfigError, match="resnet50, resnet101, resnet152"):
        resolve_config(None, {"model": "resnet18", "weights": "imagenet", "stem": "imagenet", "image_size": 32})
    with pytest.raises(ConfigError, match="drop --width and --stem"):
        transfer_config(width=0.5)
