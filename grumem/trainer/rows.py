"""Training rows: one per turn (every memory turn and the answer turn), with the exact ids the engine saw and wrote.

Token-in/token-out: a row's input is the turn's prompt ids followed by its output ids, never decoded and re-encoded.
Forced tokens (tag text written by the constraint) carry no loss. The constraint's mask is replayed over the output
ids, so the trainer's logprobs are taken under the same masked distribution the engine sampled from.
"""
from dataclasses import dataclass

from grumem.agent import Trajectory
from grumem.agent.turn_format import GateGrammar, replay_mask_rows
from grumem.engine import TokenRole
from grumem.trainer.advantages import Advantages


@dataclass
class TrainingRow:
    prompt_ids: list[int]
    output_ids: list[int]
    loss_mask: list[bool]  # per output token: sampled or chosen by the policy (not forced), and not filtered out
    engine_logprobs: list[float]  # from the rollout, under the distribution sampled from
    mask_rows: list[int | tuple[int, ...]] | None  # per output token: the constraint's mask-table row (or a quote's
    # allowed ids); None when unconstrained
    advantage: float
    group: int  # which question
    trajectory: int  # which of its G rollouts
    turn: int  # position in the trajectory (the answer turn is last)
    old_logprobs: list[float] | None = None  # pi_old of the loss tokens, filled in by the trainer

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_ids) + len(self.output_ids)

    @property
    def num_loss_tokens(self) -> int:
        return sum(self.loss_mask)

    @property
    def loss_positions(self) -> list[int]:
        return [j for j, keep in enumerate(self.loss_mask) if keep]


def trajectory_rows(traj: Trajectory, advantages: Advantages, grammar: GateGrammar,
                    mask_truncated: bool = False) -> list[TrainingRow]:
    rows = []
    for n, turn in enumerate(traj.turns):
        args = turn.format_args
        mask_rows = replay_mask_rows(grammar, args, turn.output_ids, turn.roles) if args is not None else None
        keep = not (mask_truncated and turn.finish_reason == "length")
        rows.append(TrainingRow(
            list(turn.prompt_ids), list(turn.output_ids), [keep and r != TokenRole.FORCED for r in turn.roles],
            list(turn.logprobs), mask_rows,
            advantages.trajectory if turn.kind == "answer" else advantages.of_turn(turn.chunk_index),
            traj.sample_index, traj.group_index, n,
        ))
    return rows
