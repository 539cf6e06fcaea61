"""One Multi-Conv DAPO step on SmolLM2 (NIAH single 1, 2K tokens, chunk 512, G rollouts of two questions), side by
side: the training passes in fp32, under bf16 autocast, and under bf16 autocast with shared prompt prefixes computed
once. Reports rollout and training seconds, rows, and row tokens per training second (forward and backward over
prompt + output).
  .venv/bin/python -m pytest benchmarks/bench_trainer.py --group-size 8
"""
import itertools

import pytest

from grumem.agent import AgentConfig
from grumem.engine import LLM
from grumem.tasks import make_samples
from grumem.trainer import DAPOTrainer, TrainerConfig

AGENT = AgentConfig(chunk_tokens=512, gate_prior_threshold=None)


@pytest.fixture(scope="module")
def llm():
    return LLM(kv_cache_memory_gb=1.0)  # its own engine: a step changes the weights it serves


SYSTEMS = {  # training passes: (autocast, share_prefixes)
    "fp32": (None, False),
    "bf16-autocast": ("bfloat16", False),
    "bf16-autocast-shared-prefixes": ("bfloat16", True),
}


@pytest.mark.parametrize("system", list(SYSTEMS))
def test_dapo_step(benchmark, system, llm, request):
    autocast, share_prefixes = SYSTEMS[system]
    config = TrainerConfig(group_size=request.config.option.group_size, groups_per_step=2, lr=1e-5, outcome="metric",
                           autocast=autocast, share_prefixes=share_prefixes)
    trainer = DAPOTrainer(llm, AGENT, config)
    questions = itertools.cycle(make_samples("niah_single_1", llm.tokenizer, 2048, 2, seed=10_000))
    stats = benchmark.pedantic(lambda: trainer.step(questions), rounds=1, warmup_rounds=0)
    benchmark.extra_info.update(rollout_s=stats["rollout_s"], train_s=stats["train_s"], rows=stats["rows"],
                                row_tokens=stats["row_tokens"], train_tokens_per_s=stats["row_tokens"] / stats["train_s"],
                                engine_logprob_gap=stats.get("engine_logprob_gap"))
