"""Where and how training runs: devices, precision, XLA and the distribution strategy.

`plan_runtime` is a pure function of what is visible (devices, CPU features, TF_CONFIG) and what
was asked for; `detect_environment` reads those facts from the machine; `strategy_for` gives the
plan's tf.distribute strategy, and the training model is built in the plan's `dtype_policy` (inside
idenprof.precision.computing_in). Keeping the decision pure lets tests fake any machine.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import asdict, dataclass, field

from idenprof.errors import ConfigError

# Keras dtype policies for each concrete precision.
POLICY_FOR_PRECISION = {
    "float32": "float32",
    "float16": "mixed_float16",
    "bfloat16": "mixed_bfloat16",
}
# CPU flags that mean native bfloat16 arithmetic (from /proc/cpuinfo).
NATIVE_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


@dataclass(frozen=True)
class Environment:
    """What the machine shows: GPU names, CPU feature flags and the TF_CONFIG cluster (if any)."""

    gpus: tuple[str, ...] = ()
    cpu_flags: frozenset[str] = frozenset()
    cpu_devices: int = 1
    tf_config: dict | None = None


@dataclass(frozen=True)
class RuntimePlan:
    """The decision: one line for the log, and saved in the run's config."""

    device: str  # "gpu" or "cpu"
    devices: tuple[str, ...]
    precision: str  # float32, float16 or bfloat16
    dtype_policy: str  # the Keras policy name
    xla: bool
    strategy: str  # default, mirrored or multi_worker
    replicas: int  # replicas in sync across all workers
    workers: int
    per_replica_batch: int
    global_batch: int
    notes: tuple[str, ...] = field(default=())

    def summary(self) -> str:
        return (
            f"runtime: {self.device} x{len(self.devices)} ({', '.join(self.devices)}), "
            f"precision {self.precision} ({self.dtype_policy}), xla {'on' if self.xla else 'off'}, "
            f"strategy {self.strategy} ({self.replicas} replica(s), {self.workers} worker(s)), "
            f"global batch {self.global_batch} = {self.per_replica_batch} per replica"
        )

    def to_dict(self) -> dict:
        return asdict(self)


def plan_runtime(
    env: Environment, *, precision: str = "auto", xla: str = "auto", batch_size: int = 32
) -> RuntimePlan:
    """Decide precision, XLA and strategy for `env`. `batch_size` is the global batch (images per
    optimizer step across all replicas); it must divide evenly among replicas."""
    if precision == "mixed":  # the train.py issue's name: the best mixed precision for the device
        precision = "auto" if not env.gpus else "float16"
    requested_precision = precision
    native_bf16 = bool(env.cpu_flags & set(NATIVE_BF16_CPU_FLAGS))

    on_gpu = bool(env.gpus)
    notes = []
    if precision == "auto":
        if on_gpu:
            precision = "float16"
        elif native_bf16:
            precision = "bfloat16"
        else:
            precision = "float32"
    use_xla = on_gpu if xla == "auto" else xla == "on"

    devices = env.gpus if on_gpu else tuple(f"CPU:{i}" for i in range(max(1, env.cpu_devices)))
    workers = cluster_workers(env.tf_config)
    if workers > 1:
        strategy = "multi_worker"
    elif len(devices) > 1:
        strategy = "mirrored"
    else:
        strategy = "default"
    replicas = len(devices) * workers
    if batch_size % replicas:
        raise ConfigError(
            f"--batch-size {batch_size} does not split evenly over {replicas} replicas; "
            f"use a multiple of {replicas}"
        )
    if not on_gpu and precision == "float16":
        notes.append("float16 on a CPU is emulated and slow; it is meant for testing the GPU path")
    # Only where the flags were read: no flags (no /proc/cpuinfo) says nothing about the CPU.
    if not on_gpu and env.cpu_flags and not native_bf16:
        if precision == "bfloat16":
            notes.append("this CPU has no native bfloat16 (no avx512_bf16 or amx_bf16 flag), so bfloat16 is "
                         "emulated: 2.7x slower than float32 on one such CPU (docs/BENCHMARKS.md); drop --precision")
        elif precision == "float32" and requested_precision == "auto":
            notes.append("this CPU has no native bfloat16 (no avx512_bf16 or amx_bf16 flag): training in float32, "
                         "so a time budget fits fewer epochs than on a CPU that has it (the cpu presets' speed "
                         "probe then picks smaller training crops: docs/ACCURACY.md)")
    if use_xla and strategy != "default":
        # Keras compiles with XLA only outside tf.distribute (its jit_compile="auto" says no there),
        # and forcing it fails: variables live on several devices.
        use_xla = False
        if xla == "on":
            notes.append("XLA is off: Keras does not compile with XLA under tf.distribute strategies")
    return RuntimePlan(
        device="gpu" if on_gpu else "cpu",
        devices=tuple(devices),
        precision=precision,
        dtype_policy=POLICY_FOR_PRECISION[precision],
        xla=use_xla,
        strategy=strategy,
        replicas=replicas,
        workers=workers,
        per_replica_batch=batch_size // replicas,
        global_batch=batch_size,
        notes=tuple(notes),
    )


def read_cpu_flags(cpuinfo_path: str = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU feature flags of the first processor (empty where /proc/cpuinfo is absent)."""
    try:
        with open(cpuinfo_path) as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_model_name(cpuinfo_path: str = "/proc/cpuinfo") -> str:
    """The processor's marketing name, for benchmark reports ("unknown CPU" where not shown)."""
    import platform

    try:
        with open(cpuinfo_path) as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def split_cpu_into_logical_devices(count: int) -> None:
    """Expose `count` logical CPU devices (to exercise MirroredStrategy on one CPU). Must run
    before TensorFlow initialises its devices."""
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(count)]
    )


def tf_config_from_env() -> dict | None:
    """The parsed TF_CONFIG environment variable, or None when it is unset.

    Raises:
        ConfigError: TF_CONFIG is not valid JSON.
    """
    text = os.environ.get("TF_CONFIG")
    if not text:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"TF_CONFIG is not valid JSON ({e.msg}); fix it or unset it") from None


def cluster_workers(tf_config: dict | None) -> int:
    """How many workers the TF_CONFIG cluster lists (chief included); 1 without a cluster."""
    cluster = (tf_config or {}).get("cluster") or {}
    return max(1, len(cluster.get("worker", [])) + len(cluster.get("chief", [])))


@functools.cache
def multi_worker_strategy():
    """The process's one MultiWorkerMirroredStrategy. TensorFlow needs it created before anything
    initialises its devices, so `train` calls this first when TF_CONFIG describes a cluster."""
    import tensorflow as tf

    return tf.distribute.MultiWorkerMirroredStrategy()


def local_devices(devices, tf_config: dict | None) -> list:
    """The devices of this process: once a multi-worker strategy exists, TensorFlow lists every
    worker's devices (`/job:worker/replica:0/task:1/device:CPU:0`)."""
    task = (tf_config or {}).get("task") or {}
    own = f"/job:{task.get('type')}/replica:0/task:{task.get('index')}/"
    return [d for d in devices if "/job:" not in d.name or d.name.startswith(own)]


def detect_environment() -> Environment:
    import tensorflow as tf

    gpus = tuple(d.name.replace("/physical_device:", "") for d in tf.config.list_physical_devices("GPU"))
    tf_config = tf_config_from_env()
    return Environment(
        gpus=gpus,
        cpu_flags=read_cpu_flags(),
        cpu_devices=len(local_devices(tf.config.list_logical_devices("CPU"), tf_config)),
        tf_config=tf_config,
    )


def strategy_for(plan: RuntimePlan):
    """The tf.distribute strategy for `plan`."""
    import tensorflow as tf

    if plan.strategy == "multi_worker":
        return multi_worker_strategy()
    if plan.strategy == "mirrored":
        names = [f"/{'GPU' if plan.device == 'gpu' else 'CPU'}:{d.split(':')[-1]}" for d in plan.devices]
        return tf.distribute.MirroredStrategy(devices=names)
    return tf.distribute.get_strategy()
