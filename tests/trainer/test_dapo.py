"""The trainer on the real engine with a tiny random model: rows hold the exact ids, recomputed logprobs match the
engine's under the constraint, the update ignores the micro-batch split, weights reach the engine, dynamic sampling
drops groups without signal, and the update gate learns."""
import itertools
from dataclasses import replace

import pytest
import torch

from grumem.agent import AgentConfig, MemoryAgent, TurnFormat
from grumem.agent.turn_format import TAGS, replay_mask_rows
from grumem.engine import LLM
from grumem.tasks import make_samples
from grumem.trainer import DAPOTrainer, Policy, TrainerConfig
from grumem.trainer.advantages import Advantages
from grumem.trainer.batching import micro_batches, prefix_groups, split_evenly
from grumem.trainer.rows import trajectory_rows

AGENT = AgentConfig(chunk_tokens=128, memory_tokens=8, max_think_tokens=4, answer_tokens=4, gate_prior_threshold=None)


@pytest.fixture
def llm(tiny_llama_path):
    return LLM(tiny_llama_path, num_kvcache_blocks=512)


def samples(llm, n=2, seed=1):
    return make_samples("niah_single_1", llm.tokenizer, 512, n, seed=seed)


def rollout_rows(llm, temperature=1.0, group_size=3, mask_truncated=False):
    groups = MemoryAgent(llm, AGENT).rollout(samples(llm), group_size, temperature=temperature)
    advantages = Advantages(trajectory=0.5, turns={0: -0.25})
    grammar = TurnFormat.of(llm).grammar
    return [(t, trajectory_rows(t, advantages, grammar, mask_truncated))
            for g in groups for t in g]


def test_rows_are_the_prompts_the_loop_built_and_carry_no_loss_on_forced_tags(llm):
    agent, tokenizer = MemoryAgent(llm, AGENT), llm.tokenizer
    sample_of = {i: s for i, s in enumerate(samples(llm))}
    tag_text = set(TAGS) | {tokenizer.eos_token}
    for traj, rows in rollout_rows(llm):
        sample = sample_of[traj.sample_index]
        question = agent.prompts.encode(sample.question)
        assert len(rows) == len(traj.turns) and traj.turns[-1].kind == "answer"
        assert rows[0].prompt_ids == agent.prompts.memory_prompt(question, agent.prompts.no_memory_ids,
                                                                 sample.context_ids[:AGENT.chunk_tokens])
        for turn, row in zip(traj.turns, rows):
            assert len(row.output_ids) == len(row.loss_mask) == len(row.engine_logprobs) == len(turn.roles)
            assert (row.mask_rows is None) == (turn.kind == "answer")
            dropped = [t for t, keep in zip(row.output_ids, row.loss_mask) if not keep]
            assert all(row.engine_logprobs[j] == 0.0 for j, keep in enumerate(row.loss_mask) if not keep)
            text = tokenizer.decode(dropped)
            for tag in sorted(tag_text, key=len, reverse=True):
                text = text.replace(tag, "")
            assert text == ""  # what carries no loss is tag text the constraint wrote
            assert turn.kind == "memory" or all(row.loss_mask)
        assert rows[-1].advantage == 0.5  # the answer turn: the trajectory advantage
        assert rows[0].advantage == -0.25  # chunk 0's memory turn: the mixed one


def test_truncated_turns_carry_no_loss_when_asked(llm):
    truncated = [(turn, row) for traj, rows in rollout_rows(llm, mask_truncated=True)
                 for turn, row in zip(traj.turns, rows) if turn.finish_reason == "length"]
    assert truncated  # 4-token answers are cut
    assert all(not any(row.loss_mask) for _, row in truncated)


def test_recomputed_logprobs_equal_the_engines_under_the_constraint(llm, tiny_llama_path):
    rows = [row for _, rows in rollout_rows(llm, temperature=0.7) for row in rows]
    policy = Policy(tiny_llama_path)
    with torch.no_grad():
        masked = policy.token_logprobs(rows, 0.7, TurnFormat.of(llm).mask_table)
        unmasked = policy.token_logprobs(rows, 0.7)
    engine = torch.tensor([row.engine_logprobs[j] for row in rows for j in row.loss_positions])
    torch.testing.assert_close(masked, engine, atol=1e-4, rtol=1e-4)
    assert (unmasked - engine).abs().max() > 1.0  # the gate choices are two-way only under the mask


def test_replay_rejects_a_turn_decoded_under_another_constraint(llm):
    traj, _ = rollout_rows(llm)[0]
    turn = traj.turns[0]
    with pytest.raises(ValueError, match="not decoded under this constraint"):
        replay_mask_rows(TurnFormat.of(llm).grammar, replace(AGENT.memory_format, mode="gates"), turn.output_ids,
                         turn.roles)


def gradients(trainer, rows, micro_batch_tokens, share_prefixes=True):
    trainer.policy.model.zero_grad(set_to_none=True)
    trainer.config.micro_batch_tokens, trainer.config.share_prefixes = micro_batch_tokens, share_prefixes
    trainer.backward(rows)
    return {name: p.grad.clone() for name, p in trainer.policy.model.named_parameters()}


def test_the_update_does_not_depend_on_the_micro_batch_split_nor_on_prefix_sharing(llm):
    trainer = DAPOTrainer(llm, AGENT, TrainerConfig(group_size=3, groups_per_step=2))
    rows = [row for _, rows in rollout_rows(llm) for row in rows]
    trainer.fill_old_logprobs(rows)
    for row in rows:  # off-policy by a little, so some ratios leave 1 and the clip takes part
        row.old_logprobs = [v + 0.3 * (-1) ** i for i, v in enumerate(row.old_logprobs)]
    assert max(shared for shared, _ in micro_batches(rows, 10**9)) > 100  # the forks' first turns
    assert len(list(micro_batches(rows, 1))) == len(rows)
    whole = gradients(trainer, rows, 10**9)
    for other in (gradients(trainer, rows, 1), gradients(trainer, rows, 10**9, share_prefixes=False)):
        for name in whole:
            torch.testing.assert_close(other[name], whole[name], atol=1e-6, rtol=1e-4)
    assert any(g.abs().max() > 0 for g in whole.values())


def test_prefix_groups_share_what_all_their_prompts_start_with():
    from grumem.trainer.rows import TrainingRow

    def row(prompt):
        return TrainingRow(prompt, [9], [True], [0.0], None, 0.0, 0, 0, 0)

    base = list(range(100, 180))
    rows = [row(base + [1, 2]), row([7] * 50), row(base + [1, 3, 4]), row(base[:40] + [5] * 10), row(base + [1])]
    groups = {tuple(len(r.prompt_ids) for r in members): shared for shared, members in prefix_groups(rows)}
    # the three that agree on base + [1] share 80 tokens, one short of the shortest prompt (81 tokens)
    assert groups == {(41 + 9, ): 0, (81, 82, 83): 80, (50,): 0}


def engine_logprobs(llm, prompt):
    from grumem.engine import SamplingParams

    out = llm.generate([prompt], SamplingParams(temperature=1.0, max_tokens=6, seed=3, ignore_eos=True))[0]
    return out.outputs[0].token_ids, out.outputs[0].logprobs


def test_a_step_updates_the_weights_and_the_engine_serves_them(llm):
    trainer = DAPOTrainer(llm, AGENT, TrainerConfig(group_size=4, groups_per_step=2, lr=1e-2))
    prompt = llm.tokenizer.encode("The quick brown fox")
    before = {n: p.detach().clone() for n, p in trainer.policy.model.named_parameters()}
    _, logprobs_before = engine_logprobs(llm, prompt)
    stats = trainer.step(iter(samples(llm)))
    assert stats["updates"] == 1 and stats["rows"] > 0 and stats["engine_logprob_gap"] < 1e-4
    assert any(not torch.equal(p, before[n]) for n, p in trainer.policy.model.named_parameters())
    ids, logprobs = engine_logprobs(llm, prompt)
    from grumem.trainer.rows import TrainingRow

    row = TrainingRow(prompt, ids, [True] * len(ids), logprobs, None, 0.0, 0, 0, 0)
    with torch.no_grad():
        torch.testing.assert_close(trainer.policy.token_logprobs([row], 1.0), torch.tensor(logprobs), atol=1e-4,
                                   rtol=1e-4)
    assert logprobs != logprobs_before


def test_groups_without_signal_are_dropped_until_the_round_cap(llm):
    # memagent's reward is the outcome alone, and a 1-token answer is never boxed: every group is flat
    agent = AgentConfig(mode="memagent", chunk_tokens=128, memory_tokens=4, answer_tokens=1)
    trainer = DAPOTrainer(llm, agent, TrainerConfig(group_size=2, groups_per_step=2, max_generation_rounds=3))
    before = [p.detach().clone() for p in trainer.policy.model.parameters()]
    stats = trainer.step(itertools.cycle(samples(llm)))
    assert (stats["rounds"], stats["groups"], stats["rows"], stats["trajectories"]) == (3, 0, 0, 12)
    assert all(torch.equal(p, b) for p, b in zip(trainer.policy.model.parameters(), before))


def test_configs_that_cannot_train_are_refused(llm):
    with pytest.raises(ValueError, match="gate prior"):
        DAPOTrainer(llm, AgentConfig(gate_prior_threshold=10.0))
    with pytest.raises(ValueError, match="temperature"):
        TrainerConfig(temperature=0.0)


def test_splits():
    assert split_evenly(list(range(7)), 3) == [[0, 1, 2], [3, 4], [5, 6]]
    assert split_evenly([1], 4) == [[1]]


@pytest.mark.slow
def test_the_update_gate_learns_from_the_turn_rewards(llm):
    """Only the turn term (alpha 0), no exit gate: one chunk in four holds the needle, so a model that cannot yet
    read chunks gains by saying no more often; gate accuracy must rise from chance towards 0.75."""
    agent = AgentConfig(chunk_tokens=128, memory_tokens=8, max_think_tokens=4, answer_tokens=4,
                        gate_prior_threshold=None, exit_gate=False)
    trainer = DAPOTrainer(llm, agent, TrainerConfig(group_size=8, groups_per_step=2, lr=1e-2, alpha=0.0,
                                                    max_generation_rounds=1))
    stream = itertools.cycle(make_samples("niah_single_1", llm.tokenizer, 512, 64, seed=1))
    accuracy = [trainer.step(stream)["update_acc"] for _ in range(10)]
    assert sum(accuracy[-3:]) / 3 - sum(accuracy[:2]) / 2 >= 0.1, accuracy


def test_autocast_trains_fp32_weights_with_bf16_passes(llm, tiny_llama_path):
    rows = [row for _, rows in rollout_rows(llm) for row in rows]
    mask_table = TurnFormat.of(llm).mask_table
    exact = Policy(tiny_llama_path).token_logprobs(rows, 1.0, mask_table)
    policy = Policy(tiny_llama_path, autocast=torch.bfloat16)
    fast = policy.token_logprobs(rows, 1.0, mask_table)
    assert fast.dtype == torch.float32 and not torch.equal(fast, exact)
    torch.testing.assert_close(fast, exact, atol=0.1, rtol=0.05)
    fast.sum().backward()
    assert all(p.dtype == p.grad.dtype == torch.float32 for p in policy.model.parameters() if p.grad is not None)
