"""Specification of the DenseNet family in models/: keras.applications parity (layer names,
weight order, outputs), our options (stems, width, growth rate, compression, preprocessing),
the registry and the last convolutional layer Grad-CAM reads."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras.applications.densenet import preprocess_input

from models import (
    DENSENET_SPECS,
    MODEL_BUILDERS,
    DenseNet,
    DenseNet121,
    DenseNet169,
    DenseNet201,
    ResNet18,
    ResNet50,
    build_model,
    last_conv_layer_name,
)

# A DenseNet small enough to build and run in about a second.
TINY = {"input_shape": (32, 32, 3), "classes": 5, "width": 0.25}


def pixels(shape, seed=0):
    """Raw RGB pixels, float32 in 0..255."""
    return np.random.default_rng(seed).uniform(0, 255, shape).astype("float32")


def layer_names(model):
    return [layer.name for layer in model.layers]


# --- keras.applications parity ------------------------------------------------------------------


@pytest.fixture(scope="module")
def reference_121():
    return keras.applications.DenseNet121(weights=None, input_shape=(64, 64, 3), classes=10)


def test_keras_applications_weights_file_loads_and_gives_the_same_outputs(reference_121, tmp_path):
    path = tmp_path / "densenet121.weights.h5"
    reference_121.save_weights(path)
    ours = DenseNet121(
        weights=str(path), input_shape=(64, 64, 3), classes=10, preprocessing=None
    )
    x = pixels((2, 64, 64, 3)) / 255
    np.testing.assert_allclose(
        ours.predict(x, verbose=0), reference_121.predict(x, verbose=0), atol=1e-5
    )


def test_torch_preprocessing_inside_matches_keras_applications_preprocess_input(reference_121):
    """The default: raw pixels into ours = densenet.preprocess_input(pixels) into keras's."""
    ours = DenseNet121(input_shape=(64, 64, 3), classes=10)
    ours.set_weights(reference_121.get_weights())
    x = pixels((2, 64, 64, 3))
    expected = reference_121.predict(preprocess_input(x.copy()), verbose=0)
    np.testing.assert_allclose(ours.predict(x, verbose=0), expected, atol=1e-5)


def test_layer_names_and_weight_order_match_keras_applications(reference_121):
    ours = DenseNet121(input_shape=(64, 64, 3), classes=10, preprocessing=None)
    # keras.applications leaves its input and two ZeroPadding2D layers unnamed (their automatic
    # names depend on how many layers the process built before); ours are `conv1_pad` and
    # `pool1_pad`. They hold no weights.
    unnamed = {0, 1, 5}
    assert [type(layer) for layer in ours.layers] == [type(layer) for layer in reference_121.layers]
    pads = {i for i, lay in enumerate(ours.layers) if isinstance(lay, keras.layers.ZeroPadding2D)}
    assert pads == {1, 5}
    assert [n for i, n in enumerate(layer_names(ours)) if i not in unnamed] == [
        n for i, n in enumerate(layer_names(reference_121)) if i not in unnamed
    ]
    assert [w.path for w in ours.weights] == [w.path for w in reference_121.weights]


@pytest.mark.parametrize(
    ("ours", "ref"),
    [
        (DenseNet121, keras.applications.DenseNet121),
        (DenseNet169, keras.applications.DenseNet169),
        (DenseNet201, keras.applications.DenseNet201),
    ],
)
def test_parameter_counts_equal_keras_applications(ours, ref):
    shape = (32, 32, 3)
    assert (
        ours(include_top=False, input_shape=shape).count_params()
        == ref(weights=None, include_top=False, input_shape=shape).count_params()
    )


def test_variants_are_the_rows_of_the_spec_table():
    assert DENSENET_SPECS == {
        "densenet121": [6, 12, 24, 16],
        "densenet169": [6, 12, 32, 32],
        "densenet201": [6, 12, 48, 32],
    }
    model = DenseNet([1, 2, 3, 1], **TINY)
    concats = [n for n in layer_names(model) if n.endswith("_concat")]
    assert concats[-1] == "conv5_block1_concat" and len(concats) == 7
    assert [n for n in layer_names(model) if n.endswith("_pool") and n.startswith("pool")] == [
        "pool2_pool", "pool3_pool", "pool4_pool"
    ]


# --- our options --------------------------------------------------------------------------------


@pytest.mark.parametrize(("stem", "side"), [("imagenet", 1), ("small_pool", 2), ("small", 4)])
def test_stems_downsample_a_32_pixel_image_to_the_expected_final_map(stem, side):
    model = DenseNet121(include_top=False, input_shape=(32, 32, 3), stem=stem, width=0.25)
    assert model.output.shape[1:3] == (side, side)
    x = pixels((1, 32, 32, 3))
    assert model.predict(x, verbose=0).shape[1:3] == (side, side)


def test_small_pool_stem_is_a_3x3_stride_1_conv_then_a_2x2_max_pool():
    model = DenseNet121(stem="small_pool", **TINY)
    conv = model.get_layer("conv1_conv")
    assert conv.kernel_size == (3, 3) and conv.strides == (1, 1)
    assert model.get_layer("pool1").pool_size == (2, 2)


def test_width_scales_the_growth_rate_and_the_stem():
    model = DenseNet121(**TINY)  # width 0.25: growth 8, stem 16
    assert model.get_layer("conv1_conv").filters == 16
    assert model.get_layer("conv2_block1_1_conv").filters == 32  # 4 x growth
    assert model.get_layer("conv2_block1_2_conv").filters == 8
    assert model.get_layer("conv2_block6_concat").output.shape[-1] == 16 + 6 * 8


def test_growth_rate_and_compression():
    model = DenseNet([2, 2, 2, 2], growth_rate=12, compression=1.0, **{**TINY, "width": 1.0})
    assert model.get_layer("conv2_block2_concat").output.shape[-1] == 64 + 2 * 12
    assert model.get_layer("pool2_conv").filters == 64 + 2 * 12
    half = DenseNet([2, 2, 2, 2], growth_rate=12, **{**TINY, "width": 1.0})
    assert half.get_layer("pool2_conv").filters == (64 + 2 * 12) // 2


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_classifier_outputs_float32_under_mixed_precision(policy):
    keras.mixed_precision.set_global_policy(policy)
    try:
        model = DenseNet121(**TINY)
        assert model.get_layer("conv2_block1_1_conv").compute_dtype == policy.removeprefix("mixed_")
        probabilities = model.predict(pixels((2, 32, 32, 3)), verbose=0)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert model.output.dtype == "float32" and probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize(
    "options",
    [
        {"blocks": [6, 12, 24]},
        {"blocks": [6, 0, 24, 16]},
        {"stem": "cifar"},
        {"pooling": "mean", "include_top": False},
        {"preprocessing": "tf"},
        {"width": 0},
        {"classes": 0},
        {"growth_rate": 0},
        {"growth_rate": 1.5},
        {"compression": 0},
        {"compression": 1.5},
        {"zero_init_residual": True},
        {"weights": "imagenet"},
        {"weights": "missing.weights.h5"},
        {"input_shape": (31, 31, 3)},
        {"input_tensor": np.zeros((1, 32, 32, 3), "float32")},
    ],
)
def test_impossible_options_raise_value_error(options):
    with pytest.raises(ValueError):
        DenseNet(**{"blocks": [1, 1, 1, 1], "input_shape": (32, 32, 3), **options})


@pytest.mark.parametrize("option, value", [("zero_init_residual", True), ("stochastic_depth", 0.1)])
def test_residual_options_message_says_what_to_do(option, value):
    message = f"{option} applies to ResNets' residual blocks; DenseNet has none: leave it unset"
    with pytest.raises(ValueError, match=message):
        DenseNet121(**{option: value}, **TINY)


def test_weights_of_other_options_raise_value_error_naming_the_file(tmp_path):
    path = tmp_path / "narrow.weights.h5"
    DenseNet121(**TINY).save_weights(path)
    with pytest.raises(ValueError, match="narrow.weights.h5.*same architecture and options"):
        DenseNet121(weights=str(path), **{**TINY, "width": 0.5})


# --- registry and Grad-CAM's layer --------------------------------------------------------------


def test_registry_builds_densenets_with_the_options_the_app_passes_every_model():
    assert {"densenet121", "densenet169", "densenet201"} <= set(MODEL_BUILDERS)
    model = build_model(
        "densenet121", stem="small", zero_init_residual=False, weights=None, **TINY
    )
    assert model.name == "densenet121" and model.output.shape == (None, 5)


def test_last_conv_layer_of_a_densenet_is_the_final_relu():
    model = DenseNet121(**TINY)
    name = last_conv_layer_name(model)
    assert name == "relu"
    channels = model.get_layer("bn").output.shape[-1]
    assert model.get_layer(name).output.shape == (None, 1, 1, channels)
    no_top = DenseNet121(include_top=False, pooling="avg", input_shape=(32, 32, 3), width=0.25)
    assert last_conv_layer_name(no_top) == "relu"


def test_last_conv_layer_of_a_resnet_is_the_last_block_output_of_the_last_stage():
    tiny = {"input_shape": (32, 32, 3), "width": 0.125}
    assert last_conv_layer_name(ResNet18(**tiny)) == "conv5_block2_out"
    assert last_conv_layer_name(ResNet50(include_top=False, **tiny)) == "conv5_block3_out"


def test_last_conv_layer_of_another_model_raises_value_error():
    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(2, 3, name="conv")(inputs))
    with pytest.raises(ValueError, match="not a ResNet or DenseNet"):
        last_conv_layer_name(model)
