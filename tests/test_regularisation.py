"""The accuracy options measured in docs/ACCURACY.md's ablation: weight averaging (EMA) and
stochastic depth."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
from train_helpers import TINY, metrics_rows, run_train

from idenprof.config import resolve_config
from idenprof.errors import ConfigError
from idenprof.run_folder import RunFolder
from idenprof.train.runtime import Environment, plan_runtime
from idenprof.train.training import averaged_weights, compile_model, make_callbacks
from models import ResNet18, ResNet50
from models.blocks import merge

TINY_NET = {"model": "resnet18", "image_size": 32, "stem": "small", "width": 0.25, "precision": "float32",
            "batch_size": 8, "progress": False}


def random_split(seed, n=32, classes=3):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 255, size=(n, 32, 32, 3)).astype("float32")
    y = keras.utils.to_categorical(rng.integers(0, classes, size=n), classes)
    return x, y


def test_with_ema_validation_and_the_checkpoint_use_the_averaged_weights(tmp_path):
    config = resolve_config(None, {**TINY_NET, "optimizer": "sgd", "lr": 0.05, "schedule": "constant",
                                   "ema_momentum": 0.8, "fused_batch_norm": False})
    plan = plan_runtime(Environment(), precision="float32", xla="off", batch_size=config.batch_size)
    model = compile_model(config, plan, num_classes=3, steps_per_epoch=4)
    run = RunFolder(tmp_path)
    callbacks = make_callbacks(config, run, 3, 4, 0.0, None, log=lambda *a: None)
    assert isinstance(callbacks[0], keras.callbacks.SwapEMAWeights)  # first: every evaluation sees the average
    seen = {}
    # At the epoch's end (after validation) the model holds the trained weights again, the
    # optimizer the average: record both.
    recorder = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: seen.update(
        raw=model.get_weights(), averaged=averaged_weights(model)))
    (x, y), (xv, yv) = random_split(0), random_split(1)
    history = model.fit(x, y, validation_data=(xv, yv), epochs=1, batch_size=8, verbose=0,
                        callbacks=[*callbacks[:-1], recorder])  # all but ResumeState (no resume here)

    trainable = [i for i, w in enumerate(model.weights) if w.trainable]
    assert any(not np.allclose(seen["raw"][i], seen["averaged"][i]) for i in trainable)
    assert all(np.array_equal(seen["raw"][i], seen["averaged"][i]) for i in range(len(model.weights))
               if i not in trainable)  # batch-norm statistics are not averaged
    [checkpoint] = run.checkpoints()
    saved = keras.models.load_model(checkpoint.path, compile=False)
    for mine, average in zip(saved.get_weights(), seen["averaged"], strict=True):
        np.testing.assert_array_equal(mine, average)
    # The logged validation loss is the averaged model's, not the trained one's. Both are
    # evaluated as fit validates (same loss, same batches): a loss recomputed from predict()'s
    # clipped probabilities differs from Keras's logits path when the tiny net saturates.
    def validation_loss(weights):
        network = keras.models.clone_model(saved)
        network.set_weights(weights)
        network.compile(loss=model.loss)
        return network.evaluate(xv, yv, batch_size=8, verbose=0, return_dict=True)["loss"]

    assert validation_loss(seen["averaged"]) == pytest.approx(history.history["val_loss"][0], rel=1e-4)
    assert validation_loss(seen["raw"]) != pytest.approx(history.history["val_loss"][0], rel=1e-4)


def test_without_ema_the_checkpoint_holds_the_trained_weights():
    config = resolve_config(None, {**TINY_NET, "fused_batch_norm": False})
    plan = plan_runtime(Environment(), precision="float32", xla="off", batch_size=config.batch_size)
    model = compile_model(config, plan, num_classes=3, steps_per_epoch=4)
    model.fit(*random_split(0), epochs=1, batch_size=8, verbose=0)
    for mine, trained in zip(averaged_weights(model), model.get_weights(), strict=True):
        np.testing.assert_array_equal(mine, trained)


@pytest.mark.parametrize("value", ["0", "1", "1.5", "-0.1"])
def test_an_ema_momentum_outside_zero_to_one_is_refused_naming_the_flag(value):
    with pytest.raises(ConfigError, match=r"--ema-momentum .* in \(0, 1\)"):
        resolve_config(None, {"ema_momentum": float(value)})


def test_the_resume_state_restores_the_average(tmp_path):
    config = resolve_config(None, {**TINY_NET, "ema_momentum": 0.5, "fused_batch_norm": False})
    plan = plan_runtime(Environment(), precision="float32", xla="off", batch_size=config.batch_size)
    model = compile_model(config, plan, num_classes=3, steps_per_epoch=4)
    model.fit(*random_split(0), epochs=1, batch_size=8, verbose=0)
    model.save_weights(tmp_path / "state.weights.h5")  # what callbacks.ResumeState saves
    resumed = compile_model(config, plan, num_classes=3, steps_per_epoch=4)
    resumed.optimizer.build(resumed.trainable_variables)  # as ResumeState._load_model does
    resumed.load_weights(tmp_path / "state.weights.h5")
    for mine, saved in zip(averaged_weights(resumed), averaged_weights(model), strict=True):
        np.testing.assert_array_equal(mine, saved)


@pytest.mark.slow  # 50 s: the in-process tests above cover the behaviour
def test_train_py_trains_with_ema_and_records_it(small_dataset, tmp_path):
    run_dir = tmp_path / "run"
    result = run_train(["--data-dir", small_dataset, *TINY, "--max-per-class", "4", "--epochs", "2",
                        "--ema-momentum", "0.9", "--run-dir", run_dir])
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(metrics_rows(run_dir)) == 2 and (run_dir / "metrics.json").is_file()
    assert json.loads((run_dir / "config.json").read_text())["config"]["ema_momentum"] == 0.9


def test_stochastic_depth_drops_later_blocks_more_and_only_in_training():
    plain = ResNet18(input_shape=(32, 32, 3), classes=3, width=0.25, stem="small")
    dropping = ResNet18(input_shape=(32, 32, 3), classes=3, width=0.25, stem="small", stochastic_depth=0.4)
    drops = [layer for layer in dropping.layers if isinstance(layer, keras.layers.Dropout)]
    assert [layer.name for layer in drops] == [f"conv{s}_block{b}_drop" for s in (2, 3, 4, 5) for b in (1, 2)]
    np.testing.assert_allclose([layer.rate for layer in drops], [0.05 * k for k in range(1, 9)])
    assert dropping.count_params() == plain.count_params()  # no weights: files load into either
    dropping.set_weights(plain.get_weights())
    x, _ = random_split(2, n=16)
    np.testing.assert_allclose(dropping(x, training=False), plain(x, training=False), atol=1e-6)
    assert not np.allclose(dropping(x, training=True), dropping(x, training=True))


def test_a_dropped_branch_leaves_each_image_its_shortcut_or_the_scaled_sum():
    keras.utils.set_random_seed(3)
    shortcut_in, branch_in = keras.Input((2, 2, 1)), keras.Input((2, 2, 1))
    block = keras.Model([shortcut_in, branch_in], merge(branch_in, shortcut_in, "b", drop_rate=0.5))
    shortcut, branch = np.ones((256, 2, 2, 1), "float32"), np.full((256, 2, 2, 1), 3.0, "float32")
    out = np.asarray(block([shortcut, branch], training=True))
    per_image = out.reshape(256, -1)
    assert np.all(per_image == per_image[:, :1])  # one decision per image, not per pixel
    values = set(np.unique(per_image).tolist())
    assert values == {1.0, 7.0}  # dropped: the shortcut; kept: 1 + 3 / (1 - 0.5)
    assert 0.35 < np.mean(per_image[:, 0] == 1.0) < 0.65


@pytest.mark.parametrize("settings, message", [
    ({"stochastic_depth": 1.0}, r"--stochastic-depth is a drop probability in \[0, 1\)"),
    ({"stochastic_depth": -0.1}, r"--stochastic-depth is a drop probability"),
    ({"stochastic_depth": 0.1, "model": "densenet121"}, r"densenet121 has none: choose a ResNet"),
])
def test_stochastic_depth_settings_that_cannot_work_are_refused(settings, message):
    with pytest.raises(ConfigError, match=message):
        resolve_config(None, settings)


def test_models_refuse_stochastic_depth_without_residual_branches():
    with pytest.raises(ValueError, match="plain network has none"):
        ResNet50(input_shape=(32, 32, 3), weights=None, plain=True, stochastic_depth=0.1)
    from models import DenseNet121

    with pytest.raises(ValueError, match="stochastic_depth applies to ResNets"):
        DenseNet121(input_shape=(32, 32, 3), weights=None, stochastic_depth=0.1)
