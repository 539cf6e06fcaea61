"""On the real SmolLM2 and tokenizer: what the trainer recomputes with transformers from a row's ids and replayed
masks equals what our engine sampled under, for memory turns (constrained, with free or quoted thoughts) and answer
turns."""
import pytest
import torch

from grumem.agent import AgentConfig, MemoryAgent
from grumem.tasks import make_samples
from grumem.trainer import Policy
from grumem.trainer.advantages import Advantages
from grumem.trainer.rows import trajectory_rows


@pytest.mark.parametrize("think", ["free", "quote"])
def test_transformers_recomputes_the_engines_logprobs(smollm2_llm, smollm2_path, think):
    agent = AgentConfig(chunk_tokens=512, memory_tokens=24, max_think_tokens=12, answer_tokens=12,
                        gate_prior_threshold=None, think=think)
    samples = make_samples("niah_single_1", smollm2_llm.tokenizer, 1024, 1, seed=3)
    loop = MemoryAgent(smollm2_llm, agent)
    (group,) = loop.rollout(samples, group_size=2, temperature=1.0)
    grammar = loop.turn_format.grammar
    rows = [row for traj in group
            for row in trajectory_rows(traj, Advantages(0.0, {}), grammar)]
    assert any(row.mask_rows is not None for row in rows) and any(row.mask_rows is None for row in rows)
    quote_choices = sum(isinstance(m, tuple) for row in rows if row.mask_rows for m in row.mask_rows)
    assert (quote_choices > 0) == (think == "quote")
    with torch.no_grad():
        recomputed = Policy(smollm2_path).token_logprobs(rows, 1.0, loop.turn_format.mask_table)
    engine = torch.tensor([row.engine_logprobs[j] for row in rows for j in row.loss_positions])
    torch.testing.assert_close(recomputed, engine, atol=2e-4, rtol=1e-4)
