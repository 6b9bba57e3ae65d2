"""Engine defaults chosen for reranking, and explicit settings overriding them (no engine started)."""

from __future__ import annotations

import pytest

from server.core.served_model import ModelKind
from server.core.settings import Settings
from server.engine.engine_args import QWEN3_RERANKER_HF_OVERRIDES, engine_args
from server.engine.model_kind import QWEN3_RERANKER, ModelInfo


def args_for(model: ModelInfo = QWEN3_RERANKER, **overrides):
    settings = Settings(model="models/tiny", **overrides)
    return engine_args(settings, settings.served_models()[0], model)


@pytest.fixture
def device(monkeypatch):
    """Which device engine_args sees, whatever this machine has (the tests run on CPUs and GPUs)."""
    import server.engine.engine_args

    def use(cpu: bool) -> None:
        monkeypatch.setattr(server.engine.engine_args, "on_cpu", lambda: cpu)

    return use


def test_rerank_defaults_on_the_cpu(device):
    device(cpu=True)
    args = args_for()
    assert args.max_num_batched_tokens == 8192  # vLLM's CPU default is 2048: big prefill-only steps
    assert args.block_size == 32  # vLLM's CPU default of 128 is longer than the shared prefix
    assert args.dtype in ("float32", "bfloat16")  # not vLLM's fp16, which a CPU without AVX512 emulates
    assert args.kv_cache_memory_bytes is not None  # a share of what is free, not 0.92 of the machine
    assert args.enable_prefix_caching is True
    assert args.runner == "pooling"


def test_rerank_defaults_on_a_gpu(device):
    """On a GPU vLLM keeps its own block size, dtype and memory fraction; the step size is ours."""
    device(cpu=False)
    args = args_for()
    assert args.max_num_batched_tokens == 8192
    assert (args.block_size, args.dtype, args.kv_cache_memory_bytes) == (None, "auto", None)
    assert args.enable_prefix_caching is True and args.runner == "pooling"


def test_each_kind_gets_its_own_head():
    """The original's yes/no head needs the overrides; a converted classifier or a cross-encoder runs
    its own; an encoder shares no prefix and takes at most its positions."""
    assert args_for().hf_overrides == QWEN3_RERANKER_HF_OVERRIDES
    seq_cls = args_for(ModelInfo(ModelKind.QWEN3_SEQ_CLS))
    assert not seq_cls.hf_overrides and seq_cls.enable_prefix_caching and seq_cls.max_model_len == 8192
    bert = args_for(ModelInfo(ModelKind.CROSS_ENCODER, max_positions=512))
    assert (bool(bert.hf_overrides), bert.enable_prefix_caching, bert.max_model_len) == (False, False, 512)


def test_step_size_is_never_below_the_longest_prompt():
    assert args_for(max_model_len=32768).max_num_batched_tokens == 32768


def test_explicit_settings_win():
    args = args_for(max_num_batched_tokens=2048, block_size=64, max_num_seqs=8)
    assert (args.max_num_batched_tokens, args.block_size, args.max_num_seqs) == (2048, 64, 8)


def test_priority_scheduling():
    """Equal priorities are first come, first served; chunked windows after the first wait."""
    assert args_for().scheduling_policy == "priority"


def test_data_parallel_size_is_passed_to_vllm_on_a_gpu(device):
    """One engine per GPU, balanced by vLLM (cannot run here: checked on the arguments)."""
    device(cpu=False)
    assert args_for().data_parallel_size == 1
    args = args_for(data_parallel_size=4)
    assert args.data_parallel_size == 4
    assert args.data_parallel_external_lb is False  # vLLM's own balancing inside this process


def test_several_models_on_a_gpu_each_get_their_share(device):
    """Two engines on one GPU: each its own --gpu-memory-utilization, required (cannot run here:
    checked on the arguments); one API process by default."""
    from server.engine.engine_args import api_processes, check_several_models

    device(cpu=False)
    two = {"model": ["models/small", "models/large"]}
    with pytest.raises(ValueError, match="need --gpu-memory-utilization for each"):
        check_several_models(Settings(**two))
    settings = Settings(**two, gpu_memory_utilization=[0.25, 0.65])
    check_several_models(settings)
    assert api_processes(settings) == 1 and api_processes(Settings(model="models/small")) == 2
    small, large = (engine_args(settings, served, QWEN3_RERANKER) for served in settings.served_models())
    assert (small.model, small.gpu_memory_utilization, large.model, large.gpu_memory_utilization) == (
        "models/small",
        0.25,
        "models/large",
        0.65,
    )
    with pytest.raises(ValueError, match="one API process"):
        check_several_models(Settings(**two, gpu_memory_utilization=[0.25, 0.65], api_processes=2))


def test_data_parallel_size_needs_gpus(device):
    device(cpu=True)
    with pytest.raises(ValueError, match="one GPU per engine"):
        args_for(data_parallel_size=2)


def test_cpu_threads_bind_takes_vllms_forms_only():
    for value in ("auto", "nobind", "0-3", "0,2|1,3"):
        assert Settings(model="models/tiny", cpu_threads_bind=value).cpu_threads_bind == value
    with pytest.raises(ValueError, match="cpu_threads_bind"):
        Settings(model="models/tiny", cpu_threads_bind="0-3; rm -rf /")


@pytest.mark.parametrize(
    ("cores", "env", "flag", "reserved", "wait_policy"),
    [
        (2, {}, None, "0", "PASSIVE"),  # a small machine: the worker gets every core, its threads sleep
        (4, {}, None, "0", "PASSIVE"),
        (8, {}, None, None, None),  # vLLM's reserve stays where the gain would be small
        (2, {"VLLM_CPU_NUM_OF_RESERVED_CPU": "1"}, None, "1", None),  # the user's word wins
        (2, {"VLLM_CPU_OMP_THREADS_BIND": "0"}, None, None, None),
        (2, {"OMP_WAIT_POLICY": "ACTIVE"}, None, "0", "ACTIVE"),
        (2, {}, "nobind", None, None),  # --cpu-threads-bind: vLLM's binding as given
    ],
)
def test_small_cpus_give_the_model_worker_every_core(monkeypatch, cores, env, flag, reserved, wait_policy):
    import os

    from server.engine import engine_args as module

    for name in ("VLLM_CPU_NUM_OF_RESERVED_CPU", "VLLM_CPU_OMP_THREADS_BIND", "OMP_WAIT_POLICY"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(module, "on_cpu", lambda: True)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)))
    module.set_cpu_threads_bind(Settings(cpu_threads_bind=flag))
    assert os.environ.get("VLLM_CPU_NUM_OF_RESERVED_CPU") == reserved
    assert os.environ.get("VLLM_CPU_OMP_THREADS_BIND") == (flag or env.get("VLLM_CPU_OMP_THREADS_BIND"))
    assert os.environ.get("OMP_WAIT_POLICY") == wait_policy


def test_the_engine_identity_names_vllms_release_the_device_and_the_dtype(monkeypatch, device):
    """The score cache keys on it (server/rerank/serving.py): an upgraded vLLM or another device kind sharing one
    Redis computes other logits (within float error) and must not read the first one's."""
    import vllm

    from server.engine.engine_args import engine_identity

    device(cpu=True)  # the CPU's kind is read from /proc/cpuinfo on any machine
    identity = engine_identity("float32")
    assert identity.startswith(f"vllm {vllm.__version__}; cpu ".encode()) and identity.endswith(b"; float32")
    assert engine_identity("bfloat16") != identity
    monkeypatch.setattr(vllm, "__version__", "9.9.9")
    assert engine_identity("float32") != identity
