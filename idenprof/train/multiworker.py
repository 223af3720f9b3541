"""Multi-worker training (tf.distribute.MultiWorkerMirroredStrategy) with Keras 3 `model.fit`.

Keras 3.15's TensorFlow trainer fails in two places when the strategy spans several workers
(keras-team/keras#20585, tensorflow/tensorflow#72388); `prepare_for_multi_worker` works around
both on one model instance and does nothing for any other strategy. `is_chief` and
`worker_output_dir` implement the usual TF rule for outputs: every worker runs every callback
(saving reads synchronised variables, which are collective ops all workers must join), but only
the chief writes into the real run folder.
"""

from __future__ import annotations

from pathlib import Path

from idenprof.errors import ConfigError

# The Keras versions whose trainer internals the patches below were written and tested against
# (requirements.txt pins the same range).
PATCHED_KERAS = ((3, 10), (3, 15))


def prepare_for_multi_worker(model, strategy) -> None:
    """Let `model.fit`/`model.evaluate` run under a multi-worker MultiWorkerMirroredStrategy.

    Call once after `model.compile` (which runs inside `strategy.scope()`) and before
    `model.fit`. A no-op unless `strategy` is a MultiWorkerMirroredStrategy with more than one
    worker, so it is safe to call unconditionally.

    Two per-instance patches of Keras internals (nothing global is touched):
    1. Before training, Keras builds metrics and optimizer from the first batch, which it
       averages across replicas with an eager `strategy.reduce("MEAN", (x, y))`; MWMS cannot
       reduce a tuple of PerReplica values ("Attempt to convert a value (PerReplica...) to a
       Tensor"). Shapes are all the build needs, so it gets this worker's own first batch.
    2. Keras reduces each step's logs across workers with `strategy.reduce("MEAN", v, axis=0)`,
       which fails on the scalar loss and metric values ("Invalid reduction dimension 0 for
       input with 0 dimensions"). The step outputs get a leading axis of length 1, so that
       reduction averages the workers' values and removes the axis again.
    Epoch-end logs are exact: Keras then reads the metric variables, which sum across workers.

    And one documented Keras option: every BatchNormalization layer gets `synchronized=True`.
    Keras 3 keeps BatchNormalization's moving mean and variance per worker (they are not
    aggregated), so without it each worker ends with different moving statistics; with it the
    batch statistics are those of the global batch, as in single-device training. The cost is
    three small all-reduces per BatchNormalization layer per step, and the saved layer config
    says `synchronized: true` (which changes nothing outside a distribution strategy).

    Args:
        model: a compiled `keras.Model` built inside `strategy.scope()`.
        strategy: the `tf.distribute.Strategy` the model was built under.
    """
    if not _spans_several_workers(strategy):
        return
    import tensorflow as tf
    from keras import tree

    check_patchable_keras(model)

    def first_local_batch(value):
        if isinstance(value, tf.distribute.DistributedValues):
            return strategy.experimental_local_results(value)[0]
        return value

    keras_build = model._maybe_symbolic_build

    def build_from_local_batch(iterator=None, data_batch=None):
        # Same contract as Keras' TensorFlowTrainer._maybe_symbolic_build: fit/evaluate reset
        # the iterator afterwards, so taking one batch here loses nothing.
        if iterator is not None:
            for _, _, batches in iterator:
                data_batch = tree.map_structure(first_local_batch, next(batches))
                break
        keras_build(data_batch=data_batch)

    def with_worker_axis(step):
        def step_with_worker_axis(data):
            return tree.map_structure(lambda value: tf.expand_dims(value, 0), step(data))

        return step_with_worker_axis

    for layer in _batch_norm_layers(model):
        layer.synchronized = True
    model._maybe_symbolic_build = build_from_local_batch
    model.train_step = with_worker_axis(model.train_step)
    model.test_step = with_worker_axis(model.test_step)


def check_patchable_keras(model) -> None:
    """Refuse, with a clear message, a Keras whose trainer the patches were not tested against
    (they replace private methods, which a newer Keras may rename or change).

    Raises:
        ConfigError: the installed Keras is outside PATCHED_KERAS or lacks the patched method.
    """
    import keras

    version = tuple(int(part) for part in keras.__version__.split(".")[:2])
    low, high = PATCHED_KERAS
    if not low <= version <= high or not hasattr(model, "_maybe_symbolic_build"):
        raise ConfigError(
            f"multi-worker training is tested with Keras {low[0]}.{low[1]} to {high[0]}.{high[1]}, "
            f"not {keras.__version__}; install a Keras in that range "
            f"(python -m pip install 'keras>={low[0]}.{low[1]},<{high[0]}.{high[1] + 1}')"
        )


def _batch_norm_layers(layer):
    """The BatchNormalization layers in `layer`, including those of nested models."""
    import keras

    for sublayer in getattr(layer, "layers", ()):
        if isinstance(sublayer, keras.layers.BatchNormalization):
            yield sublayer
        yield from _batch_norm_layers(sublayer)


def _spans_several_workers(strategy) -> bool:
    import tensorflow as tf

    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return False
    return len(strategy.extended.worker_devices) < strategy.num_replicas_in_sync


def is_chief(tf_config: dict | None) -> bool:
    """Whether this process is the chief of the cluster `tf_config` (the parsed TF_CONFIG)
    describes: the "chief" task, else worker 0; a process without a cluster is its own chief.

    Raises:
        ConfigError: TF_CONFIG has a cluster but no task type and index for this process.
    """
    task_type, task_index = _task(tf_config)
    if task_type is None:
        return True
    if task_type == "chief":
        return True
    has_chief = bool(tf_config["cluster"].get("chief"))
    return task_type == "worker" and task_index == 0 and not has_chief


def worker_output_dir(run_dir: str | Path, tf_config: dict | None) -> Path:
    """Where this process writes checkpoints, backups and logs: `run_dir` for the chief, and
    `run_dir/workertemp_<index>` for every other worker. The name is fixed per worker, so a
    restarted worker finds its own BackupAndRestore state; nothing reads the files otherwise.

    Raises:
        ConfigError: as for `is_chief`.
    """
    run_dir = Path(run_dir)
    if is_chief(tf_config):
        return run_dir
    task_type, task_index = _task(tf_config)
    return run_dir / f"{task_type}temp_{task_index}"


def _task(tf_config: dict | None) -> tuple[str | None, int | None]:
    """(task type, task index) from a parsed TF_CONFIG; (None, None) without a cluster."""
    if not tf_config or not tf_config.get("cluster"):
        return None, None
    task = tf_config.get("task") or {}
    if "type" not in task or "index" not in task:
        raise ConfigError(
            'TF_CONFIG describes a cluster but no task for this process; add "task": '
            '{"type": "worker", "index": N}'
        )
    return task["type"], int(task["index"])
