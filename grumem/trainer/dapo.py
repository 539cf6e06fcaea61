"""Multi-Conv DAPO on the rollout API: G memory-loop rollouts per question, GRU-Mem rewards and advantages, one
training row per turn, the token-mean clipped surrogate, and the new weights pushed back to the engine.

One `step` (strictly on-policy between steps):
1. rollouts of `groups_per_step` questions, G each; groups whose advantages are all zero are dropped and new
   questions rolled out, at most `max_generation_rounds` times (dynamic sampling; a short batch trains as it is);
2. rows with pi_old: the trained weights' logprobs before the first update (with one update per batch, from the
   update's own forward pass, ratio 1), or the engine's (`old_logprobs="engine"`);
3. `mini_batches` optimizer updates over the shuffled rows, each a token-mean over its mini-batch, accumulated over
   micro-batches of at most `micro_batch_tokens` positions, a prompt prefix common to their rows computed once;
4. `LLM.update_weights` (which also drops the stale prefix cache).
"""
import copy
import itertools
import random
import time
from collections.abc import Iterator

import torch

from grumem.agent import AgentConfig, MemoryAgent, Trajectory
from grumem.engine import LLM
from grumem.engine.models.registry import checkpoint_path
from grumem.engine.seeding import mix_seed
from grumem.evaluation import summarize
from grumem.tasks import Sample
from grumem.trainer.advantages import group_advantages, has_signal
from grumem.trainer.batching import micro_batches, split_evenly
from grumem.trainer.config import AUTOCAST, TrainerConfig
from grumem.trainer.loss import clipped_surrogate, k3_kl, truncated_is_weights
from grumem.trainer.data_parallel import DataParallel
from grumem.trainer.policy import Policy
from grumem.trainer.rewards import TrajectoryReward, trajectory_reward
from grumem.trainer.rows import TrainingRow, trajectory_rows


METRICS = ("loss", "clip_frac", "kl", "engine_logprob_gap")  # what backward returns, summed over micro-batches


class DAPOTrainer:
    def __init__(self, llm: LLM, agent_config: AgentConfig | None = None, config: TrainerConfig | None = None,
                 policy: Policy | None = None, data_parallel: DataParallel | None = None, pool=None):
        """`data_parallel`: the training passes split over torch.distributed ranks (trainer/data_parallel.py).
        `pool`: a grumem.distributed.ReplicaPool the rollouts come from (the new weights reach every replica after
        each update); without one, `llm` rolls out."""
        self.config = config or TrainerConfig()
        self.agent_config = agent_config or AgentConfig(gate_prior_threshold=None)
        if self.agent_config.uses_gate_prior:
            raise ValueError("train without the gate prior (gate_prior_threshold=None): RL is what teaches the gates")
        self.llm, self.agent = llm, MemoryAgent(llm, self.agent_config)
        self.policy = policy or Policy(checkpoint_of(llm), str(llm.device), AUTOCAST[self.config.autocast])
        self.mask_table = self.agent.turn_format.mask_table
        self.data_parallel, self.pool = data_parallel, pool
        self.reference = None
        if self.config.kl_coef > 0:
            self.reference = copy.deepcopy(self.policy)
            self.reference.model.requires_grad_(False)
        self.optimizer = torch.optim.AdamW(self.policy.parameters(), lr=self.config.lr,
                                           weight_decay=self.config.weight_decay)
        warmup = self.config.warmup_steps
        self.lr_schedule = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda n: min(1.0, (n + 1) / (warmup + 1)))
        self.num_steps, self.num_rounds = 0, 0
        self.sync_engine()  # rollouts come from exactly the weights being trained

    def sync_engine(self) -> None:
        self.policy.push_to(self.llm)
        if self.pool is not None:
            self.pool.update_weights(self.policy.named_tensors())

    def step(self, samples: Iterator[Sample]) -> dict:
        """One rollout batch and its updates; returns the step's statistics."""
        start = time.perf_counter()
        kept, stats = self._collect_groups(samples)
        rows = [row for group_rows in kept for row in group_rows if row.num_loss_tokens]
        rollout_seconds = time.perf_counter() - start
        if rows:
            if self.config.mini_batches > 1 or self.config.old_logprobs == "engine":
                self.fill_old_logprobs(rows)
            stats |= self._update(rows)
            self.sync_engine()
        self.num_steps += 1
        return {"step": self.num_steps, **stats, "rows": len(rows), "row_tokens": sum(r.num_tokens for r in rows),
                "loss_tokens": sum(r.num_loss_tokens for r in rows), "rollout_s": rollout_seconds,
                "train_s": time.perf_counter() - start - rollout_seconds}

    # --- 1. rollouts with dynamic sampling -----------------------------------------------------------------
    def _collect_groups(self, samples: Iterator[Sample]) -> tuple[list[list[TrainingRow]], dict]:
        config, kept, trajectories, rewards = self.config, [], [], []
        rounds = errors = 0
        while len(kept) < config.groups_per_step and rounds < config.max_generation_rounds:
            batch = list(itertools.islice(samples, config.groups_per_step))
            if not batch:
                break
            seed = mix_seed(config.seed, self.num_rounds)
            if self.pool is None:
                groups = self.agent.rollout(batch, config.group_size, config.temperature, 1.0, seed)
            else:
                groups = self.pool.rollout(batch, self.agent_config, config.group_size, config.temperature, 1.0, seed)
            self.num_rounds, rounds = self.num_rounds + 1, rounds + 1
            for sample, group in zip(batch, groups):
                group = [t for t in group if t.error is None]  # engine errors: no reward to learn from
                errors += config.group_size - len(group)
                rows, group_rewards = self._group_rows(sample, group)
                trajectories += group
                rewards += group_rewards
                if rows and len(kept) < config.groups_per_step:
                    kept.append(rows)
        stats = rollout_stats(trajectories, rewards, self.agent_config.uses_exit_gate)
        return kept, {"rounds": rounds, "groups": len(kept), "errors": errors, **stats}

    def _group_rows(self, sample: Sample, group: list[Trajectory]) -> tuple[list[TrainingRow], list[TrajectoryReward]]:
        """The group's rows, or none when it carries no signal."""
        rewards = [trajectory_reward(sample, t, self.agent_config, self.config.outcome) for t in group]
        advantages = group_advantages(rewards, self.config.alpha, self.config.std_normalize)
        if not has_signal(advantages):
            return [], rewards
        grammar = self.agent.turn_format.grammar
        rows = [row for t, a in zip(group, advantages)
                for row in trajectory_rows(t, a, grammar, self.config.mask_truncated)]
        return rows, rewards

    # --- 2. pi_old -----------------------------------------------------------------------------------------
    @torch.no_grad()
    def fill_old_logprobs(self, rows: list[TrainingRow]) -> None:
        """pi_old of every loss token: recomputed with the weights being trained, or the engine's."""
        if self.config.old_logprobs == "engine":
            for row in rows:
                row.old_logprobs = [row.engine_logprobs[j] for j in row.loss_positions]
            return
        for shared, micro in micro_batches(rows, self.config.micro_batch_tokens, self.config.share_prefixes):
            logprobs = self.policy.token_logprobs(micro, self.config.temperature, self.mask_table, shared)
            for row, values in zip(micro, logprobs.split([r.num_loss_tokens for r in micro])):
                row.old_logprobs = values.tolist()

    # --- 3. updates ----------------------------------------------------------------------------------------
    def _update(self, rows: list[TrainingRow]) -> dict:
        rows = list(rows)
        random.Random(mix_seed(self.config.seed, self.num_steps)).shuffle(rows)
        totals = {"loss": 0.0, "clip_frac": 0.0, "kl": 0.0, "engine_logprob_gap": 0.0, "grad_norm": 0.0}
        num_updates = 0
        for mini in split_evenly(rows, self.config.mini_batches):
            num_tokens = sum(r.num_loss_tokens for r in mini)
            if num_tokens == 0:
                continue
            self.optimizer.zero_grad(set_to_none=True)
            for name, value in self.backward(mini).items():
                totals[name] += value
            totals["grad_norm"] += float(torch.nn.utils.clip_grad_norm_(self.policy.parameters(),
                                                                        self.config.max_grad_norm))
            self.optimizer.step()
            self.lr_schedule.step()
            num_updates += 1
        return {name: value / max(num_updates, 1) for name, value in totals.items()} | {"updates": num_updates}

    def backward(self, rows: list[TrainingRow]) -> dict:
        """Accumulates the gradient of the rows' token-mean loss over micro-batches (the split, prefix sharing and
        data-parallel ranks do not change it); returns the metrics."""
        num_tokens, totals = sum(r.num_loss_tokens for r in rows), {}
        dp = self.data_parallel
        mine = rows if dp is None else dp.share(rows)
        for shared, micro in micro_batches(mine, self.config.micro_batch_tokens, self.config.share_prefixes):
            for name, value in self._accumulate(micro, num_tokens, shared).items():
                totals[name] = totals.get(name, 0.0) + value
        if dp is not None:
            dp.all_reduce_gradients(self.policy.parameters())
            totals = dp.all_reduce_metrics({name: totals.get(name, 0.0) for name in METRICS})
        return totals

    def _accumulate(self, rows: list[TrainingRow], num_tokens: int, shared: int = 0) -> dict:
        """Backward of these rows' share of the mini-batch's token-mean loss; returns their share of the metrics."""
        config, device = self.config, self.policy.device
        logprobs = self.policy.token_logprobs(rows, config.temperature, self.mask_table, shared, config.prompt_grad)
        if rows[0].old_logprobs is None:  # one update per batch: pi_old is these weights, ratio 1
            old = logprobs.detach()
        else:
            old = torch.tensor([v for r in rows for v in r.old_logprobs], device=device)
        engine = torch.tensor([r.engine_logprobs[j] for r in rows for j in r.loss_positions], device=device)
        advantages = torch.tensor([r.advantage for r in rows for _ in range(r.num_loss_tokens)], device=device)
        loss, clipped = clipped_surrogate(logprobs, old, advantages, config.eps_low, config.eps_high, config.dual_clip)
        if config.tis_cap is not None:  # the rollout came from the engine's numerics, not pi_old's
            loss = loss * truncated_is_weights(old, engine, config.tis_cap)
        kl = torch.zeros_like(loss)
        if self.reference is not None:
            with torch.no_grad():
                ref = self.reference.token_logprobs(rows, config.temperature, self.mask_table, shared)
            kl = k3_kl(logprobs, ref)
            loss = loss + config.kl_coef * kl
        total = loss.sum() / num_tokens
        total.backward()
        share = lambda x: float(x.float().sum()) / num_tokens  # noqa: E731
        return {"loss": float(total.detach()), "clip_frac": share(clipped), "kl": share(kl.detach()),
                "engine_logprob_gap": share((old - engine).abs())}


def rollout_stats(trajectories: list[Trajectory], rewards: list[TrajectoryReward], exit_gate: bool) -> dict:
    """Means over the trajectories rolled out this step (kept or not); None where nothing was measured. Reading and
    exit statistics are the memory loop's own (`evaluation.summarize`)."""
    mean = lambda xs: sum(xs) / len(xs) if xs else None  # noqa: E731
    updates = [v for r in rewards for v in r.updates.values()]
    loop = summarize(trajectories, wall_seconds=0.0)
    stats = {
        "trajectories": len(trajectories),
        "reward": mean([r.total for r in rewards]), "outcome": mean([r.outcome for r in rewards]),
        "format": mean([r.format for r in rewards]), "update_acc": mean([v > 0 for v in updates]),
        "chunks_read": loop["chunks_read"] if trajectories else None,
    }
    if exit_gate:
        stats |= {"exit_exact": loop["exit_exact"], "exit_early": loop["exit_early"]}
    return stats


def checkpoint_of(llm: LLM) -> str:
    """The checkpoint folder the engine's weights came from (the base, when it merged an adapter)."""
    path = checkpoint_path(llm.config.model)
    if path is None:
        raise ValueError(f"{llm.config.model!r} has random weights and no checkpoint to train; "
                         "give the engine a checkpoint folder (or the default model)")
    return path
