"""The main job side by side: the plain HF MemAgent loop vs grumem (memagent mode, gated w/o and w the exit gate,
and with the exit gate on the model's own untrained gates, without the gate prior).

Same questions (NIAH single, --length tokens, chunk 1024, memory <= 256), same model, one run; the summary at the end
prints each system's wall time, its speed-up over the plain loop and its accuracy.
  .venv/bin/python -m pytest benchmarks/bench_agent.py --questions 16 --length 8192
"""
import time
from dataclasses import replace

import pytest

from grumem.agent import AgentConfig, MemoryAgent
from grumem.tasks import make_samples
from memagent_hf import memagent_hf

SYSTEMS = {
    "memagent-hf-plain": None,
    "memagent-grumem-engine": AgentConfig(mode="memagent"),
    "grumem-wo-exit-gate": AgentConfig(mode="grumem", exit_gate=False),
    "grumem-w-exit-gate": AgentConfig(mode="grumem", exit_gate=True),
    "grumem-w-exit-gate-own-gates": AgentConfig(mode="grumem", exit_gate=True, gate_prior_threshold=None),
}
CHUNK_TOKENS, MEMORY_TOKENS, ANSWER_TOKENS = 1024, 256, 48


@pytest.fixture(scope="module")
def samples(grumem_llm, request):
    options = request.config.option
    return make_samples(options.task, grumem_llm.tokenizer, options.length, options.questions, seed=0)


@pytest.mark.parametrize("system", list(SYSTEMS))
def test_memory_loop(benchmark, system, samples, grumem_llm, hf_model, agent_results):
    def run():
        if SYSTEMS[system] is None:
            return [r["score"] for r in memagent_hf(hf_model, grumem_llm.tokenizer, samples, CHUNK_TOKENS,
                                                    MEMORY_TOKENS, ANSWER_TOKENS)]
        config = replace(SYSTEMS[system], chunk_tokens=CHUNK_TOKENS, memory_tokens=MEMORY_TOKENS,
                         answer_tokens=ANSWER_TOKENS)
        return [t.score for t in MemoryAgent(grumem_llm, config).run(samples)]

    start = time.perf_counter()
    scores = benchmark.pedantic(run, rounds=1, warmup_rounds=0)
    seconds = time.perf_counter() - start
    accuracy = sum(scores) / len(scores)
    benchmark.extra_info.update(accuracy=accuracy, seconds_per_question=seconds / len(scores))
    agent_results[system] = (seconds, accuracy, len(scores))
