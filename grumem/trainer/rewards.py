"""GRU-Mem's rewards for one trajectory: outcome, format and exit (summed into r_traj) and an update reward per turn.

- outcome ("boxed", the paper's): 1 when the boxed answer matches a gold answer exactly after SQuAD normalisation
  (every needle value for multi-value NIAH), else 0; ("metric"): the task's metric on the answer, boxed or not
  (sub_em, needle recall), for models that do not write \\boxed{};
- format: 1 when every memory turn wrote the four tags (and, for "boxed", the answer came inside \\boxed{}), else 0;
- exit (with the exit gate): 0 when reading stopped at the chunk holding the last evidence, -0.75 before it, -0.5
  after it (never ending early counts as late);
- update, per labelled memory turn: +1 when <check> says yes exactly on a chunk holding evidence, else -1 (a
  missing <check> is wrong).
memagent has no gates: its reward is the outcome alone (MemAgent's recipe).
"""
from dataclasses import dataclass, field

from grumem.agent import AgentConfig, Trajectory
from grumem.tasks import Sample
from grumem.tasks.metrics import niah_recall, normalize_answer

EXIT_REWARDS = {"early": -0.75, "exact": 0.0, "late": -0.5, None: 0.0}  # by Trajectory.exit_timing
OUTCOMES = ("boxed", "metric")


@dataclass
class TrajectoryReward:
    outcome: float
    format: float = 0.0
    exit: float = 0.0
    updates: dict[int, float] = field(default_factory=dict)  # chunk index -> +1 / -1, for labelled memory turns

    @property
    def total(self) -> float:
        """r_traj: the update rewards enter only through the turn advantages."""
        return self.outcome + self.format + self.exit


def outcome_reward(sample: Sample, traj: Trajectory, outcome: str = "boxed") -> float:
    if traj.error is not None or not sample.answers:
        return 0.0
    if outcome == "metric":
        return traj.score or 0.0
    if not traj.boxed:
        return 0.0
    if sample.metric == "recall":
        return float(niah_recall(traj.answer, sample.answers) == 1.0)
    answer = normalize_answer(traj.answer)
    return float(bool(answer) and answer in {normalize_answer(gold) for gold in sample.answers})


def exit_reward(traj: Trajectory) -> float:
    return EXIT_REWARDS[traj.exit_timing]


def update_rewards(traj: Trajectory) -> dict[int, float]:
    def correct(turn) -> bool:
        return turn.check is not None and (turn.check == "yes") == turn.has_evidence

    return {turn.chunk_index: 1.0 if correct(turn) else -1.0 for turn in traj.memory_turns
            if turn.has_evidence is not None}


def trajectory_reward(sample: Sample, traj: Trajectory, config: AgentConfig, outcome: str = "boxed"
                      ) -> TrajectoryReward:
    if outcome not in OUTCOMES:
        raise ValueError(f"outcome must be one of {OUTCOMES}, got {outcome!r}")
    if config.mode == "memagent":
        return TrajectoryReward(outcome_reward(sample, traj, outcome))
    well_formed = traj.error is None and traj.format_ok and (traj.boxed or outcome == "metric")
    return TrajectoryReward(outcome_reward(sample, traj, outcome), float(well_formed),
                            exit_reward(traj) if config.uses_exit_gate else 0.0, update_rewards(traj))
