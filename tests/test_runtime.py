"""The runtime decision is a pure function of the visible machine: fake machines here."""

import pytest

from idenprof.errors import ConfigError
from idenprof.train.runtime import Environment, local_devices, plan_runtime, read_cpu_flags

CPU_BF16 = frozenset({"avx2", "avx512f", "avx512_bf16"})
CPU_AMX = frozenset({"avx2", "amx_bf16", "amx_tile"})
CPU_PLAIN = frozenset({"avx2", "fma"})


def test_one_gpu_gets_float16_and_xla():
    plan = plan_runtime(Environment(gpus=("GPU:0",), cpu_flags=CPU_PLAIN), batch_size=32)
    assert (plan.device, plan.precision, plan.dtype_policy, plan.xla) == ("gpu", "float16", "mixed_float16", True)
    assert (plan.strategy, plan.replicas, plan.per_replica_batch, plan.global_batch) == ("default", 1, 32, 32)


def test_several_gpus_use_mirrored_strategy_and_split_the_global_batch():
    plan = plan_runtime(Environment(gpus=("GPU:0", "GPU:1", "GPU:2", "GPU:3")), batch_size=128)
    assert plan.strategy == "mirrored"
    assert plan.replicas == 4 and plan.per_replica_batch == 32 and plan.global_batch == 128
    assert plan.precision == "float16" and not plan.xla and not plan.notes  # Keras: no XLA under tf.distribute


def test_forcing_xla_under_a_strategy_turns_it_off_with_a_note():
    plan = plan_runtime(Environment(cpu_devices=2), precision="float16", xla="on", batch_size=16)
    assert plan.strategy == "mirrored" and not plan.xla
    assert any("XLA is off" in note for note in plan.notes)


def test_cpu_with_native_bf16_gets_bfloat16_without_xla():
    for flags in (CPU_BF16, CPU_AMX):
        plan = plan_runtime(Environment(cpu_flags=flags))
        assert (plan.device, plan.precision, plan.dtype_policy, plan.xla) == (
            "cpu", "bfloat16", "mixed_bfloat16", False)


def test_cpu_without_bf16_stays_float32_and_says_why():
    plan = plan_runtime(Environment(cpu_flags=CPU_PLAIN))
    assert (plan.precision, plan.dtype_policy, plan.xla, plan.strategy) == ("float32", "float32", False, "default")
    [note] = plan.notes
    assert "no native bfloat16" in note and "fewer epochs" in note


def test_forcing_bfloat16_on_a_cpu_without_it_warns_of_emulation():
    [note] = plan_runtime(Environment(cpu_flags=CPU_PLAIN), precision="bfloat16").notes
    assert "emulated" in note and "--precision" in note
    assert plan_runtime(Environment(cpu_flags=CPU_BF16), precision="bfloat16").notes == ()


def test_no_bfloat16_note_where_it_does_not_apply():
    # A CPU with bfloat16, a float32 the user asked for, and a machine whose flags could not be read.
    assert plan_runtime(Environment(cpu_flags=CPU_BF16)).notes == ()
    assert plan_runtime(Environment(cpu_flags=CPU_PLAIN), precision="float32").notes == ()
    assert plan_runtime(Environment(cpu_flags=frozenset())).notes == ()
    assert plan_runtime(Environment(gpus=("GPU:0",), cpu_flags=CPU_PLAIN)).notes == ()


def test_tf_config_cluster_means_multi_worker():
    tf_config = {"cluster": {"worker": ["127.0.0.1:2001", "127.0.0.1:2002"]}, "task": {"type": "worker", "index": 0}}
    plan = plan_runtime(Environment(gpus=("GPU:0",), tf_config=tf_config), batch_size=64)
    assert plan.strategy == "multi_worker" and plan.workers == 2 and plan.replicas == 2
    assert plan.per_replica_batch == 32


def test_forced_settings_win_over_auto():
    plan = plan_runtime(Environment(cpu_flags=CPU_PLAIN), precision="float16", xla="on")
    assert (plan.precision, plan.dtype_policy, plan.xla) == ("float16", "mixed_float16", True)
    assert any("float16 on a CPU" in note for note in plan.notes)
    plan = plan_runtime(Environment(gpus=("GPU:0",)), precision="float32", xla="off")
    assert (plan.precision, plan.xla) == ("float32", False)


def test_mixed_means_the_device_best_mixed_precision():
    assert plan_runtime(Environment(gpus=("GPU:0",)), precision="mixed").precision == "float16"
    assert plan_runtime(Environment(cpu_flags=CPU_BF16), precision="mixed").precision == "bfloat16"


def test_logical_cpu_devices_use_mirrored_strategy():
    plan = plan_runtime(Environment(cpu_devices=2), batch_size=8)
    assert plan.strategy == "mirrored" and plan.devices == ("CPU:0", "CPU:1") and plan.per_replica_batch == 4


def test_a_batch_that_does_not_split_over_the_replicas_is_a_config_error():
    with pytest.raises(ConfigError, match="multiple of 4"):
        plan_runtime(Environment(gpus=("GPU:0", "GPU:1", "GPU:2", "GPU:3")), batch_size=30)


def test_summary_is_one_line_with_the_decision():
    line = plan_runtime(Environment(gpus=("GPU:0", "GPU:1")), batch_size=64).summary()
    assert "\n" not in line
    for fact in ("gpu x2", "float16", "xla off", "mirrored", "global batch 64", "32 per replica"):
        assert fact in line


def test_cpu_flags_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512_bf16\n\nprocessor\t: 1\nflags\t\t: fpu\n")
    assert read_cpu_flags(str(info)) == frozenset({"fpu", "avx2", "avx512_bf16"})
    assert read_cpu_flags(str(tmp_path / "missing")) == frozenset()


def test_local_devices_are_this_workers_only():
    class Device:
        def __init__(self, name):
            self.name = name

    devices = [Device(f"/job:worker/replica:0/task:{t}/device:CPU:0") for t in (0, 1)]
    tf_config = {"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 1}}
    assert [d.name for d in local_devices(devices, tf_config)] == ["/job:worker/replica:0/task:1/device:CPU:0"]
    assert len(local_devices([Device("/device:CPU:0"), Device("/device:CPU:1")], None)) == 2
