"""Specification of the ResNet family in models/: shapes, keras.applications parity, the paper's
options, preprocessing inside the model, mixed precision, saving, the registry and its errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
from keras.applications.resnet50 import preprocess_input

from models import (
    MODEL_BUILDERS,
    PREPROCESS_PREFIX,
    RESNET_SPECS,
    ResNet,
    ResNet18,
    ResNet34,
    ResNet50,
    ResNet101,
    ResNet152,
    basic_block,
    build_model,
    check_input_size,
    conv_block,
    identity_block,
    minimum_input_size,
)

REPO = Path(__file__).resolve().parents[1]
# A network small enough to build and run in well under a second.
TINY = {"input_shape": (32, 32, 3), "classes": 5, "width": 0.125}


def pixels(shape, seed=0):
    """Raw RGB pixels, float32 in 0..255."""
    return np.random.default_rng(seed).uniform(0, 255, shape).astype("float32")


def trainable_count(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def layer_names(model):
    return [layer.name for layer in model.layers]


def block_model(block_fn, input_shape, *args, **kwargs):
    inputs = keras.Input(input_shape)
    return keras.Model(inputs, block_fn(inputs, *args, **kwargs))


# --- blocks -----------------------------------------------------------------------------------


def test_identity_block_keeps_its_input_shape():
    model = block_model(identity_block, (9, 9, 64), 16, name="b")
    assert model.output.shape == (None, 9, 9, 64)
    assert "b_0_conv" not in layer_names(model)


def test_conv_block_with_stride_2_halves_height_and_width_and_sets_channels():
    model = block_model(conv_block, (9, 10, 32), 16, stride=2, name="b")
    assert model.output.shape == (None, 5, 5, 64)
    assert "b_0_conv" in layer_names(model)


def test_basic_block_with_stride_2_halves_height_and_width_and_sets_channels():
    model = block_model(basic_block, (8, 8, 16), 32, stride=2, name="b")
    assert model.output.shape == (None, 4, 4, 32)


def test_zero_init_block_with_shortcut_a_starts_as_subsampled_zero_padded_input():
    """gamma=0 on the last batch norm silences the residual branch, so at initialisation the
    output is relu(shortcut(x)): every second pixel, with the new channels zero."""
    model = block_model(
        basic_block, (8, 8, 4), 8, stride=2, shortcut="A", zero_init_residual=True, name="b"
    )
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 4)).astype("float32")
    y = model.predict(x, verbose=0)
    np.testing.assert_allclose(y[..., :4], np.maximum(x[:, ::2, ::2, :], 0), atol=1e-6)
    assert np.all(y[..., 4:] == 0)
    assert (
        model.count_params()
        == block_model(basic_block, (8, 8, 4), 8, stride=2, shortcut=None, name="b").count_params()
    )


# --- keras.applications parity and parameter counts --------------------------------------------


def test_resnet50_matches_keras_applications_layer_names_weights_and_outputs():
    ref = keras.applications.ResNet50(weights=None, classifier_activation=None)
    ours = ResNet50(preprocessing=None, classifier_activation=None)
    assert layer_names(ours)[1:] == layer_names(ref)[1:]
    assert [w.shape for w in ours.weights] == [w.shape for w in ref.weights]
    assert ours.count_params() == ref.count_params() == 25_636_712

    ours.set_weights(ref.get_weights())
    x = pixels((2, 224, 224, 3)) / 255
    difference = np.abs(ours.predict(x, verbose=0) - ref.predict(x, verbose=0))
    assert difference.max() < 1e-4


def test_caffe_preprocessing_matches_keras_applications_preprocess_input():
    """The transfer-learning setup: raw pixels into ours = preprocess_input(pixels) into keras's."""
    ref = keras.applications.ResNet50(weights=None, input_shape=(64, 64, 3), classes=7)
    ours = ResNet50(preprocessing="caffe", input_shape=(64, 64, 3), classes=7)
    ours.set_weights(ref.get_weights())
    x = pixels((2, 64, 64, 3))
    expected = ref.predict(preprocess_input(x.copy()), verbose=0)
    np.testing.assert_allclose(ours.predict(x, verbose=0), expected, atol=1e-5)


@pytest.mark.parametrize(
    ("ours", "ref"),
    [(ResNet101, keras.applications.ResNet101), (ResNet152, keras.applications.ResNet152)],
)
def test_deep_bottleneck_parameter_counts_equal_keras_applications(ours, ref):
    shape = (32, 32, 3)
    assert (
        ours(input_shape=shape).count_params()
        == ref(weights=None, input_shape=shape).count_params()
    )


@pytest.mark.parametrize(("builder", "count"), [(ResNet18, 11_689_512), (ResNet34, 21_797_672)])
def test_basic_block_trainable_parameter_counts_equal_torchvision(builder, count):
    assert trainable_count(builder(input_shape=(32, 32, 3))) == count


# --- the paper's options and ours ---------------------------------------------------------------


def test_shortcut_options_differ_only_in_shortcut_parameters():
    counts = {s: ResNet18(shortcut=s, **TINY).count_params() for s in "ABC"}
    plain = ResNet18(plain=True, **TINY)
    assert plain.count_params() == counts["A"] < counts["B"] < counts["C"]
    assert not [n for n in layer_names(plain) if n.endswith("_add")]
    # Option B projects only the first blocks of conv3..conv5; C projects all eight blocks.
    for option, projections in (("A", 0), ("B", 3), ("C", 8)):
        model = ResNet18(shortcut=option, **TINY)
        assert sum(n.endswith("_0_conv") for n in layer_names(model)) == projections


def test_plain_network_is_the_residual_network_without_shortcuts():
    residual = ResNet34(**TINY)
    plain = ResNet34(plain=True, **TINY)
    convs = [n for n in layer_names(residual) if n.endswith("_conv") and "_0_" not in n]
    assert [n for n in layer_names(plain) if n.endswith("_conv")] == convs


@pytest.mark.parametrize(("stem", "side"), [("imagenet", 1), ("small_pool", 2), ("small", 4)])
def test_stems_downsample_a_32_pixel_image_to_the_expected_final_map(stem, side):
    model = ResNet18(include_top=False, input_shape=(32, 32, 3), stem=stem, width=0.125)
    assert model.output.shape == (None, side, side, 64)


def test_small_pool_stem_is_a_3x3_stride_1_conv_then_a_2x2_max_pool():
    model = ResNet18(stem="small_pool", **TINY)
    conv = model.get_layer("conv1_conv")
    assert conv.kernel_size == (3, 3) and conv.strides == (1, 1)
    assert model.get_layer("pool1_pool").pool_size == (2, 2)


def test_width_scales_the_stem_and_every_stage():
    model = ResNet18(width=0.5, input_shape=(32, 32, 3))
    filters = [
        model.get_layer(f"{s}_block1_1_conv").filters for s in ("conv2", "conv3", "conv4", "conv5")
    ]
    assert model.get_layer("conv1_conv").filters == 32
    assert filters == [32, 64, 128, 256]


def test_zero_init_residual_zeroes_only_the_last_batch_norm_of_each_block():
    model = ResNet50(zero_init_residual=True, **TINY)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            expected = 0.0 if layer.name.endswith("_3_bn") else 1.0
            assert np.all(layer.gamma.numpy() == expected), layer.name


def test_pooling_options_without_top():
    kwargs = {"include_top": False, "input_shape": (32, 32, 3), "width": 0.125}
    assert ResNet18(**kwargs).output.shape == (None, 1, 1, 64)
    assert ResNet18(pooling="avg", **kwargs).get_layer("avg_pool").output.shape == (None, 64)
    assert ResNet18(pooling="max", **kwargs).get_layer("max_pool").output.shape == (None, 64)


def test_input_tensor_with_a_predecessor_becomes_the_model_input():
    image = keras.Input((32, 32, 3))
    resized = keras.layers.Resizing(40, 40)(image)
    model = ResNet18(input_tensor=resized, classes=3, width=0.125)
    assert model.inputs == [image]
    assert model.predict(pixels((1, 32, 32, 3)), verbose=0).shape == (1, 3)


# --- preprocessing ------------------------------------------------------------------------------


def preprocess_output(model):
    last = [layer for layer in model.layers if layer.name.startswith(PREPROCESS_PREFIX)][-1]
    return keras.Model(model.input, last.output).predict(pixels((2, 32, 32, 3)), verbose=0)


def test_scale_preprocessing_is_pixels_over_255_and_the_default():
    np.testing.assert_allclose(
        preprocess_output(ResNet18(**TINY)), pixels((2, 32, 32, 3)) / 255, rtol=1e-6
    )


def test_caffe_preprocessing_is_bgr_minus_imagenet_mean():
    expected = preprocess_input(pixels((2, 32, 32, 3)))
    np.testing.assert_allclose(
        preprocess_output(ResNet18(preprocessing="caffe", **TINY)), expected, atol=1e-4
    )


def test_no_preprocessing_adds_no_layers():
    model = ResNet18(preprocessing=None, **TINY)
    assert not [n for n in layer_names(model) if n.startswith(PREPROCESS_PREFIX)]
    assert layer_names(model)[1] == "conv1_pad"


# --- mixed precision ----------------------------------------------------------------------------


@pytest.fixture
def restore_policy():
    yield
    keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_classifier_outputs_float32_under_mixed_precision(policy, restore_policy):
    keras.mixed_precision.set_global_policy(policy)
    model = ResNet18(preprocessing="caffe", **TINY)
    assert model.get_layer("conv2_block1_1_conv").compute_dtype == policy.removeprefix("mixed_")
    probabilities = model.predict(pixels((2, 32, 32, 3)), verbose=0)
    assert model.output.dtype == "float32" and probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


# --- saving, loading, weights -------------------------------------------------------------------

LOAD_WITHOUT_PROJECT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import keras
    x = np.load(sys.argv[1])
    outputs = {p: keras.models.load_model(p).predict(x, verbose=0).tolist() for p in sys.argv[2:]}
    leaked = [m for m in ("models", "idenprof") if m in sys.modules]
    print(json.dumps({"outputs": outputs, "leaked": leaked}))
    """
)


def test_saved_models_load_with_plain_keras_in_a_process_without_the_project(tmp_path):
    models = {
        "caffe_a": ResNet18(preprocessing="caffe", shortcut="A", stem="small_pool", **TINY),
        "scale_b": ResNet50(zero_init_residual=True, **TINY),
    }
    x = pixels((2, 32, 32, 3))
    np.save(tmp_path / "x.npy", x)
    expected = {}
    for label, model in models.items():
        for suffix in (".keras", ".h5"):
            path = str(tmp_path / f"{label}{suffix}")
            model.save(path)
            expected[path] = model.predict(x, verbose=0)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, "-c", LOAD_WITHOUT_PROJECT, str(tmp_path / "x.npy"), *expected],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["leaked"] == []
    for path, outputs in expected.items():
        np.testing.assert_allclose(
            np.array(report["outputs"][path]), outputs, atol=1e-6, err_msg=path
        )


@pytest.mark.parametrize("filename", ["tiny.weights.h5", "tiny.h5"])
def test_weights_path_loads_saved_weights(tmp_path, filename):
    source = ResNet18(**TINY)
    path = tmp_path / filename
    if filename.endswith(".weights.h5"):
        source.save_weights(path)
    else:  # Keras 3 writes legacy HDF5 only as a whole model; its weights load by layer name.
        source.save(path)
    x = pixels((2, 32, 32, 3))
    loaded = ResNet18(weights=str(path), **TINY)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), source.predict(x, verbose=0))


def test_weights_of_another_architecture_raise_value_error_naming_the_file(tmp_path):
    path = tmp_path / "narrow.weights.h5"
    ResNet18(**TINY).save_weights(path)
    with pytest.raises(ValueError, match="narrow.weights.h5.*same architecture and options"):
        ResNet18(weights=str(path), **{**TINY, "width": 0.25})


@pytest.mark.parametrize(
    ("weights", "message"), [("imagenet", "train.py"), ("missing.h5", "not found")]
)
def test_weights_string_that_is_not_a_file_raises_value_error(weights, message):
    with pytest.raises(ValueError, match=message):
        ResNet18(weights=weights, **TINY)


# --- registry, sizes, errors --------------------------------------------------------------------


def test_registry_builds_every_variant_by_name():
    assert list(MODEL_BUILDERS) == [
        "resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
        "densenet121", "densenet169", "densenet201",
    ]
    model = build_model("resnet34", **TINY)
    assert model.name == "resnet34" and model.output.shape == (None, 5)


def test_unknown_model_name_raises_value_error_listing_the_choices():
    with pytest.raises(ValueError, match="resnet18, resnet34, .*, densenet201"):
        build_model("resnet51")


@pytest.mark.parametrize(("stem", "minimum"), [("imagenet", 32), ("small_pool", 16), ("small", 8)])
def test_minimum_input_size_per_stem(stem, minimum):
    assert minimum_input_size(stem) == minimum
    check_input_size(minimum, stem)
    with pytest.raises(ValueError, match=f"at least {minimum} px"):
        check_input_size(minimum - 1, stem)


def test_building_for_too_small_images_raises_value_error():
    with pytest.raises(ValueError, match="at least 32 px"):
        ResNet50(input_shape=(31, 64, 3))


@pytest.mark.parametrize(
    "options",
    [
        {"shortcut": "D"},
        {"stem": "cifar", "include_top": False, "input_shape": (None, None, 3)},
        {"pooling": "mean", "include_top": False},
        {"preprocessing": "tf"},
        {"width": 0},
        {"classes": 0},
        {"plain": True, "zero_init_residual": True},
        {"spec": ("wide", [2, 2, 2, 2])},
        {"spec": ("basic", [2, 2, 2])},
        {"spec": ("basic", [2, 0, 2, 2])},
        {"spec": [2, 2, 2, 2]},
        {"input_tensor": np.zeros((1, 32, 32, 3), "float32")},
        {"input_shape": (32, 32)},
    ],
)
def test_impossible_options_raise_value_error(options):
    options = {"spec": RESNET_SPECS["resnet18"], "input_shape": (32, 32, 3), **options}
    with pytest.raises(ValueError):
        ResNet(**options)


def test_variants_are_the_rows_of_the_spec_table():
    assert RESNET_SPECS["resnet152"] == ("bottleneck", [3, 8, 36, 3])
    model = ResNet(RESNET_SPECS["resnet34"], name="resnet34", **TINY)
    assert layer_names(model)[1:] == layer_names(ResNet34(**TINY))[1:]
    blocks = {s: sum(n.startswith(s) and n.endswith("_out") for n in layer_names(model))
              for s in ("conv2", "conv3", "conv4", "conv5")}
    assert list(blocks.values()) == [3, 4, 6, 3]


def test_models_package_imports_from_the_repo_root():
    result = subprocess.run(
        [sys.executable, "-c", "from models import ResNet50; ResNet50(classes=10).summary()"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "conv5_block3_out" in result.stdout
    assert "23,608,202" in result.stdout  # 25,636,712 - 1000-class head + 10-class head


STANDALONE = textwrap.dedent(
    """
    import importlib.util, json, sys
    import numpy as np
    from models import ResNet50
    model = ResNet50(input_shape=(32, 32, 3), classes=3, width=0.25)
    probabilities = model.predict(np.zeros((1, 32, 32, 3), "float32"), verbose=0)
    import models
    print(json.dumps({
        "models": models.__file__,
        "idenprof": importlib.util.find_spec("idenprof") is not None,
        "sum": float(probabilities.sum()),
    }))
    """
)


def test_models_folder_copied_alone_into_another_project_builds_and_runs(tmp_path):
    shutil.copytree(REPO / "models", tmp_path / "models",
                    ignore=shutil.ignore_patterns("__pycache__"))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, "-c", STANDALONE],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["models"] == str(tmp_path / "models" / "__init__.py")
    assert report["idenprof"] is False
    assert report["sum"] == pytest.approx(1.0, abs=1e-5)
