"""Engine throughput on SmolLM2-135M, side by side with Hugging Face transformers in the same run.

prefill tokens/s at 1K and 4K, decode tokens/s at batch 1 and 16 over 2K tokens of context (against HF's tight
forward loop and against `generate`), and the prefill saved when 16 prompts share a 1K-token prefix; fp32, and bf16
on both sides (fast on CPUs with AVX512-BF16 or AMX). Throughputs land in extra_info["tokens_per_s"].
"""
import pytest
import torch
from transformers import DynamicCache

from conftest import random_prompts
from grumem.agent import FormatArgs, TurnFormat
from grumem.engine import SamplingParams

DECODE_STEPS = 16
GREEDY_ONE = SamplingParams(temperature=0, max_tokens=1)


@pytest.mark.parametrize("length", [1024, 4096])
@pytest.mark.parametrize("system", ["grumem", "hf", "grumem-bf16", "hf-bf16"])
def test_prefill(benchmark, system, length, engines):
    prompt = random_prompts(1, length, seed=length)[0]
    engine = engines(system)
    if system.startswith("grumem"):
        run = lambda: (engine.reset_prefix_cache(), engine.generate([prompt], GREEDY_ONE))  # noqa: E731
    else:
        run = lambda: engine(torch.tensor([prompt]), logits_to_keep=1)  # noqa: E731
    with torch.inference_mode():
        benchmark.pedantic(run, rounds=2, warmup_rounds=1)
    benchmark.extra_info["tokens_per_s"] = length / benchmark.stats.stats.mean


def _grumem_decode_setup(llm, prompts, params=None):
    params = params or SamplingParams(temperature=0, max_tokens=DECODE_STEPS + 1, ignore_eos=True)
    llm.reset_prefix_cache()
    for prompt in prompts:
        llm.add_request(prompt, params)
    while llm.scheduler.waiting:  # prefill everything; the timed part is decode only
        llm.step()


def _hf_decode_setup(model, prompts):
    cache = DynamicCache()
    with torch.inference_mode():
        logits = model(torch.tensor(prompts), past_key_values=cache, logits_to_keep=1).logits
    return cache, logits[:, -1].argmax(-1, keepdim=True)


@pytest.mark.parametrize("batch", [1, 16])
@pytest.mark.parametrize("system", ["grumem", "grumem-bf16kv", "hf", "hf-generate", "grumem-bf16", "hf-bf16"])
def test_decode(benchmark, system, batch, engines):
    """grumem-bf16kv: a bf16 KV cache under the fp32 model; hf: a tight forward loop over HF's KV cache;
    hf-generate: `generate` continuing from a prefilled cache."""
    prompts = random_prompts(batch, 2048, seed=batch)
    engine = engines(system)
    if system == "hf-generate":
        def setup():  # all but the last prompt token cached: each of the DECODE_STEPS forwards is one token
            cache = DynamicCache()
            with torch.inference_mode():
                engine(torch.tensor(prompts)[:, :-1], past_key_values=cache, logits_to_keep=1)
            return (torch.tensor(prompts),), dict(past_key_values=cache)

        def run(inputs, past_key_values):
            with torch.inference_mode():
                engine.generate(inputs, past_key_values=past_key_values, max_new_tokens=DECODE_STEPS,
                                  min_new_tokens=DECODE_STEPS, do_sample=False, pad_token_id=0)
    elif system.startswith("grumem"):
        def setup():
            _grumem_decode_setup(engine, prompts)
            return (), {}

        def run():
            while engine.has_unfinished_requests():
                engine.step()
    else:
        state = {}

        def setup():
            state["cache"], state["next"] = _hf_decode_setup(engine, prompts)
            return (), {}

        @torch.inference_mode()
        def run():
            for _ in range(DECODE_STEPS):
                logits = engine(state["next"], past_key_values=state["cache"]).logits
                state["next"] = logits[:, -1].argmax(-1, keepdim=True)

    benchmark.pedantic(run, setup=setup, rounds=2)
    benchmark.extra_info["tokens_per_s"] = batch * DECODE_STEPS / benchmark.stats.stats.mean


@pytest.mark.parametrize("system", ["grumem", "hf"])
def test_shared_prefix_prefill(benchmark, system, engines):
    """16 prompts = one 1K-token prefix + 64 own tokens: grumem computes the prefix once."""
    prefix = random_prompts(1, 1024, seed=7)[0]
    prompts = random_prompts(16, 64, seed=8, prefix=prefix)
    engine = engines(system)
    if system == "grumem":
        def run():
            engine.reset_prefix_cache()
            before = engine.stats.num_prefill_tokens
            engine.generate(prompts, GREEDY_ONE)
            benchmark.extra_info["prefill_tokens_computed"] = engine.stats.num_prefill_tokens - before
    else:
        def run():
            with torch.inference_mode():
                engine(torch.tensor(prompts), logits_to_keep=1)
            benchmark.extra_info["prefill_tokens_computed"] = 16 * len(prompts[0])

    benchmark.pedantic(run, rounds=1, warmup_rounds=0)
    benchmark.extra_info["tokens_per_s"] = 16 * len(prompts[0]) / benchmark.stats.stats.mean


@pytest.mark.parametrize("constrained", [False, True], ids=["free", "format"])
def test_constrained_decode(benchmark, constrained, grumem_llm):
    """Batch-16 decode at 2K context with and without the GRU-Mem turn format (mask table, forced tags, caps):
    the constraint's cost per decode step. Rate from the engine's own decode counters."""
    llm, prompts = grumem_llm, random_prompts(16, 2048, seed=16)
    turn_format = {TurnFormat.of(llm).name: FormatArgs(max_think_tokens=8, max_memory_tokens=8)}
    params = SamplingParams(temperature=0, max_tokens=DECODE_STEPS + 1, ignore_eos=True,
                            logits_processors=turn_format if constrained else {})

    def counters():
        return llm.stats.num_decode_tokens, llm.stats.decode_seconds, llm.stats.num_decode_steps

    def setup():  # the prompts stay cached between rounds: each round's prefill is one token per prompt
        for prompt in prompts:
            llm.add_request(prompt, params)
        while llm.scheduler.waiting:
            llm.step()
        return (), {}

    def run():
        while llm.has_unfinished_requests():
            llm.step()

    before = counters()  # decode steps run only inside `run`: the counters measure exactly the timed part
    benchmark.pedantic(run, setup=setup, rounds=5, warmup_rounds=1)
    tokens, seconds, steps = (now - then for now, then in zip(counters(), before))
    benchmark.extra_info["tokens_per_s"] = tokens / seconds
    benchmark.extra_info["ms_per_step"] = 1000 * seconds / steps
