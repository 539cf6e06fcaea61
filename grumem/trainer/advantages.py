"""GRU-Mem's advantages, computed per group of G trajectories before they are expanded into per-turn rows (so long
documents do not weigh more in the group statistics).

A_traj = r_traj - mean over the group; A_turn at chunk t = r_update - mean over the trajectories still reading at t
(early exits drop out). A memory turn gets alpha * A_traj + (1 - alpha) * A_turn; a turn without an update reward
(the answer turn, unlabelled chunks, memagent) gets A_traj alone, as in MemAgent, which broadcasts it to every turn.
"""
from collections import defaultdict
from dataclasses import dataclass

import torch

from grumem.trainer.rewards import TrajectoryReward


@dataclass
class Advantages:
    trajectory: float
    turns: dict[int, float]  # chunk index -> the mixed advantage of that memory turn

    def of_turn(self, chunk_index: int) -> float:
        return self.turns.get(chunk_index, self.trajectory)


def centered(values: list[float], std_normalize: bool) -> list[float]:
    """Each value minus the mean, divided by the (unbiased) std when asked; a single value gives 0."""
    x = torch.tensor(values, dtype=torch.float64)
    centred = x - x.mean()
    if std_normalize and len(values) > 1:
        centred = centred / (x.std() + 1e-6)
    return centred.tolist()


def group_advantages(rewards: list[TrajectoryReward], alpha: float, std_normalize: bool = False) -> list[Advantages]:
    """One Advantages per trajectory of a group, in order."""
    a_traj = centered([r.total for r in rewards], std_normalize)
    by_chunk: dict[int, list[tuple[int, float]]] = defaultdict(list)  # chunk -> (trajectory, r_update) alive there
    for i, reward in enumerate(rewards):
        for chunk, value in reward.updates.items():
            by_chunk[chunk].append((i, value))
    turns: list[dict[int, float]] = [{} for _ in rewards]
    for chunk, entries in by_chunk.items():
        for (i, _), a_turn in zip(entries, centered([v for _, v in entries], std_normalize)):
            turns[i][chunk] = alpha * a_traj[i] + (1 - alpha) * a_turn
    return [Advantages(a, t) for a, t in zip(a_traj, turns)]


def has_signal(advantages: list[Advantages], tolerance: float = 1e-9) -> bool:
    """False when every turn of every trajectory has a zero advantage: the group carries no gradient."""
    return any(abs(a.trajectory) > tolerance or any(abs(v) > tolerance for v in a.turns.values())
               for a in advantages)
