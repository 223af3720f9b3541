"""Fused batch normalization: the same maths as Keras' layer, through TensorFlow's fused kernel."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from idenprof.config import resolve_config
from idenprof.train.runtime import Environment, plan_runtime
from idenprof.train.training import checkpoint_model_for, compile_model
from models import DenseNet121, ResNet18
from models.batch_norm import FusedBatchNormalization, use_fused_batch_norm

IMAGES = np.random.default_rng(0).uniform(0, 255, (8, 32, 32, 3)).astype("float32")


@pytest.fixture
def policy():
    """Set a global dtype policy for one test, then restore float32."""
    yield keras.mixed_precision.set_global_policy
    keras.mixed_precision.set_global_policy("float32")


def tiny_resnet():
    keras.utils.set_random_seed(0)
    return ResNet18(classes=10, input_shape=(32, 32, 3), width=0.25, stem="small")


def batch_norm_layers(model):
    return [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]


def traced_op_types(layer, inputs, training):
    graph = tf.function(lambda x: layer(x, training=training)).get_concrete_function(
        tf.TensorSpec(inputs.shape, inputs.dtype)).graph
    return {op.type for op in graph.get_operations()}


def test_the_fused_copy_has_fused_layers_and_the_same_weights_names_and_order():
    model = tiny_resnet()
    fused = use_fused_batch_norm(model)
    assert all(type(layer) is FusedBatchNormalization for layer in batch_norm_layers(fused))
    assert len(batch_norm_layers(fused)) == len(batch_norm_layers(model)) > 0
    assert [w.path for w in fused.weights] == [w.path for w in model.weights]
    for ours, theirs in zip(fused.get_weights(), model.get_weights(), strict=True):
        np.testing.assert_array_equal(ours, theirs)


def test_inference_matches_keras_batch_norm_exactly():
    model = tiny_resnet()
    fused = use_fused_batch_norm(model)
    # Non-trivial moving statistics, so inference really normalises with them.
    for layer in batch_norm_layers(model):
        channels = layer.moving_mean.shape[0]
        layer.moving_mean.assign(np.linspace(-1, 1, channels))
        layer.moving_variance.assign(np.linspace(0.5, 2, channels))
    fused.set_weights(model.get_weights())
    np.testing.assert_allclose(fused(IMAGES, training=False), model(IMAGES, training=False), atol=1e-6)


def test_densenet_fused_copy_matches_in_inference_and_training():
    keras.utils.set_random_seed(0)
    model = DenseNet121(classes=10, input_shape=(32, 32, 3), width=0.25, stem="small_pool")
    fused = use_fused_batch_norm(model)
    assert all(type(layer) is FusedBatchNormalization for layer in batch_norm_layers(fused))
    assert [w.path for w in fused.weights] == [w.path for w in model.weights]
    np.testing.assert_allclose(fused(IMAGES, training=False), model(IMAGES, training=False), atol=1e-6)
    np.testing.assert_allclose(fused(IMAGES, training=True), model(IMAGES, training=True), atol=1e-4)


def test_a_training_step_normalises_with_batch_statistics_and_updates_the_moving_averages():
    model = tiny_resnet()
    fused = use_fused_batch_norm(model)
    np.testing.assert_allclose(fused(IMAGES, training=True), model(IMAGES, training=True), atol=1e-4)
    for ours, theirs in zip(batch_norm_layers(fused), batch_norm_layers(model), strict=True):
        np.testing.assert_allclose(ours.moving_mean, theirs.moving_mean, rtol=1e-4, atol=1e-6)
        # Unbiased (fused kernel) against biased (Keras) batch variance: n / (n - 1) apart.
        np.testing.assert_allclose(ours.moving_variance, theirs.moving_variance, rtol=2e-3)
        assert not np.allclose(ours.moving_variance, 1.0)  # really updated


def test_training_gives_the_same_losses_as_keras_batch_norm():
    labels = np.eye(10, dtype="float32")[np.arange(8) % 10]
    losses = []
    for model in (tiny_resnet(), use_fused_batch_norm(tiny_resnet())):
        model.compile(optimizer=keras.optimizers.SGD(0.01), loss="categorical_crossentropy")
        losses.append(model.fit(IMAGES, labels, epochs=3, batch_size=8, verbose=0).history["loss"])
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-3)
    assert losses[1][-1] < losses[1][0]


@pytest.mark.parametrize("dtype_policy", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_runs_the_fused_kernel_on_half_precision_activations(dtype_policy, policy):
    policy(dtype_policy)
    layer = FusedBatchNormalization()
    half = keras.ops.cast(IMAGES, dtype_policy.split("_")[1])
    layer(half)  # build
    for training in (True, False):
        assert layer(half, training=training).dtype == half.dtype
        ops = traced_op_types(layer, half, training)
        assert "FusedBatchNormV3" in ops, ops
        assert "Cast" not in ops  # neither the activations nor the float32 statistics are cast
    assert layer.moving_mean.dtype == "float32"


def test_cases_the_kernel_does_not_cover_fall_back_to_keras():
    synchronized = FusedBatchNormalization(synchronized=True)  # multi-worker training sets this
    synchronized(IMAGES)
    assert "FusedBatchNormV3" not in traced_op_types(synchronized, IMAGES, True)
    flat = FusedBatchNormalization()
    vectors = IMAGES.reshape(8, -1)[:, :16]
    np.testing.assert_allclose(flat(vectors, training=True),
                               keras.layers.BatchNormalization()(vectors, training=True), atol=1e-4)


def test_train_py_trains_fused_and_saves_keras_layers():
    config = resolve_config(None, {"model": "resnet18", "image_size": 32, "stem": "small", "width": 0.25})
    plan = plan_runtime(Environment(), precision="float32", xla="off", batch_size=config.batch_size)
    training_model = compile_model(config, plan, num_classes=10, steps_per_epoch=10)
    assert all(type(layer) is FusedBatchNormalization for layer in batch_norm_layers(training_model))
    saved = checkpoint_model_for(config, 10)(training_model)
    assert all(type(layer) is keras.layers.BatchNormalization for layer in batch_norm_layers(saved))
    np.testing.assert_allclose(saved.predict(IMAGES, verbose=0), training_model.predict(IMAGES, verbose=0),
                               atol=1e-6)

    unfused = resolve_config(None, {"model": "resnet18", "image_size": 32, "stem": "small", "width": 0.25,
                                    "fused_batch_norm": False})
    model = compile_model(unfused, plan, num_classes=10, steps_per_epoch=10)
    assert all(type(layer) is keras.layers.BatchNormalization for layer in batch_norm_layers(model))
    assert checkpoint_model_for(unfused, 10)(model) is model  # already float32 Keras layers: saved as is
