"""GRU-Mem's rewards on hand-made trajectories."""
import pytest

from grumem.agent import AgentConfig, TurnRecord, Trajectory
from grumem.tasks import Sample
from grumem.trainer.rewards import outcome_reward, trajectory_reward


def sample(answers, metric="sub_em") -> Sample:
    return Sample("t", 0, list(range(400)), "q?", answers, [(150, 160)], metric)


def memory_turn(chunk: int, check: str, has_evidence: bool, well_formed: bool = True) -> TurnRecord:
    return TurnRecord("memory", chunk, [1], [2], [0.0], [0], "stop", check=check, next="continue",
                      well_formed=well_formed, has_evidence=has_evidence)


def trajectory(answer="Paris", boxed=True, stop_chunk=1, turns=None) -> Trajectory:
    turns = turns if turns is not None else [memory_turn(0, "no", False), memory_turn(1, "yes", True)]
    return Trajectory(0, turns=turns, num_chunks=4, evidence_chunks=[1], answer=answer, boxed=boxed,
                      stop_chunk=stop_chunk)


@pytest.mark.parametrize("answer, boxed, expected", [
    ("Paris", True, 1.0), ("  the paris.", True, 1.0), ("Paris, France", True, 0.0), ("Paris", False, 0.0),
])
def test_outcome_is_exact_match_of_the_boxed_answer(answer, boxed, expected):
    assert outcome_reward(sample(["Paris"]), trajectory(answer, boxed)) == expected


def test_outcome_of_a_multi_value_needle_needs_every_value():
    values = sample(["1234", "5678"], metric="recall")
    assert outcome_reward(values, trajectory("1234 and 5678")) == 1.0
    assert outcome_reward(values, trajectory("1234")) == 0.0


@pytest.mark.parametrize("stop_chunk, expected", [(0, -0.75), (1, 0.0), (3, -0.5)])  # the paper's values
def test_exit_reward_against_the_last_evidence_chunk(stop_chunk, expected):
    r = trajectory_reward(sample(["Paris"]), trajectory(stop_chunk=stop_chunk), AgentConfig())
    assert r.exit == expected
    assert r.total == 1.0 + 1.0 + expected  # outcome + format + exit


def test_update_rewards_per_labelled_turn_and_format():
    turns = [memory_turn(0, "yes", False), memory_turn(1, "yes", True), memory_turn(2, None, False, False)]
    r = trajectory_reward(sample(["Paris"]), trajectory(turns=turns, stop_chunk=2), AgentConfig())
    assert r.updates == {0: -1.0, 1: 1.0, 2: -1.0}
    assert r.format == 0.0


def test_without_the_exit_gate_there_is_no_exit_reward_and_memagent_has_only_the_outcome():
    late = trajectory(stop_chunk=3)
    assert trajectory_reward(sample(["Paris"]), late, AgentConfig(exit_gate=False)).exit == 0.0
    memagent = trajectory_reward(sample(["Paris"]), late, AgentConfig(mode="memagent"))
    assert (memagent.total, memagent.updates) == (1.0, {})


def test_the_metric_outcome_accepts_unboxed_answers_for_models_that_never_box():
    unboxed = trajectory(answer="The capital is Paris.", boxed=False)
    unboxed.score = 1.0  # sub_em, as the memory loop scores it
    assert trajectory_reward(sample(["Paris"]), unboxed, AgentConfig()).total == 0.0  # boxed: 0 + 0
    metric = trajectory_reward(sample(["Paris"]), unboxed, AgentConfig(), outcome="metric")
    assert (metric.outcome, metric.format) == (1.0, 1.0)
    with pytest.raises(ValueError, match="outcome"):
        trajectory_reward(sample(["Paris"]), unboxed, AgentConfig(), outcome="judge")
