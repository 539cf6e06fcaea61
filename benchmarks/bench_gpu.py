"""GPU engine benchmark (skipped without CUDA): Qwen2.5-3B shapes with random weights in bf16, decode from CUDA
graphs vs eager, the Triton backend vs the torch reference; prefill tokens/s at 4K and decode tokens/s at 2K context.
  python -m pytest benchmarks/bench_gpu.py --benchmark-json=bench_gpu.json   (scripts/gpu_check.sh runs it)
"""
import gc

import pytest
import torch

from conftest import random_prompts
from grumem.engine import LLM, SamplingParams

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

MODEL = "qwen2.5-3b"
DECODE_STEPS = 32
SYSTEMS = {  # name -> engine options
    "triton-graphs": dict(attention_backend="triton"),
    "triton-eager": dict(attention_backend="triton", enforce_eager=True),
    "torch-eager": dict(attention_backend="torch", enforce_eager=True),
}
_ENGINES: dict[str, LLM] = {}


def engine(system: str) -> LLM:
    """One engine at a time on the device: the previous one is dropped first."""
    if system not in _ENGINES:
        _ENGINES.clear()
        gc.collect()
        torch.cuda.empty_cache()
        _ENGINES[system] = LLM(MODEL, device="cuda", dtype="bfloat16", max_num_seqs=64,
                               max_model_len=8192, gpu_memory_utilization=0.5, **SYSTEMS[system])
    return _ENGINES[system]


def synced(fn):
    def run():
        fn()
        torch.cuda.synchronize()
    return run


@pytest.mark.parametrize("system", list(SYSTEMS))
def test_gpu_prefill(benchmark, system):
    llm, prompt = engine(system), random_prompts(1, 4096, seed=4)[0]
    params = SamplingParams(temperature=0, max_tokens=1)
    run = synced(lambda: (llm.reset_prefix_cache(), llm.generate([prompt], params)))
    benchmark.pedantic(run, rounds=5, warmup_rounds=1)
    benchmark.extra_info["tokens_per_s"] = 4096 / benchmark.stats.stats.mean


@pytest.mark.parametrize("batch", [1, 16, 64])
@pytest.mark.parametrize("system", list(SYSTEMS))
def test_gpu_decode(benchmark, system, batch):
    llm, prompts = engine(system), random_prompts(batch, 2048, seed=batch)
    params = SamplingParams(temperature=0, max_tokens=DECODE_STEPS + 1, ignore_eos=True)

    def setup():
        llm.reset_prefix_cache()
        for prompt in prompts:
            llm.add_request(prompt, params)
        steps = llm.stats.num_decode_steps
        while llm.stats.num_decode_steps == steps:  # prefill, then one decode step: the timed part is decode
            llm.step()
        return (), {}

    @synced
    def run():
        while llm.has_unfinished_requests():
            llm.step()

    benchmark.pedantic(run, setup=setup, rounds=3)
    benchmark.extra_info["tokens_per_s"] = batch * (DECODE_STEPS - 1) / benchmark.stats.stats.mean
