"""GRU-Mem's group advantages: centred per group, turns per chunk over the trajectories alive there, the alpha mix."""
import pytest

from grumem.trainer.advantages import centered, group_advantages, has_signal
from grumem.trainer.rewards import TrajectoryReward


def reward(total: float, updates: dict[int, float]) -> TrajectoryReward:
    return TrajectoryReward(outcome=total, updates=updates)


def test_equal_rewards_give_no_signal():
    rewards = [reward(1.0, {0: 1.0, 1: -1.0})] * 4
    advantages = group_advantages(rewards, alpha=0.9)
    assert all(a.trajectory == 0 and set(a.turns.values()) == {0.0} for a in advantages)
    assert not has_signal(advantages)


def test_turn_advantages_use_only_the_trajectories_alive_at_that_chunk():
    rewards = [reward(2.0, {0: 1.0, 1: 1.0, 2: -1.0}),  # read three chunks
               reward(0.0, {0: -1.0})]  # exited after the first
    first, second = group_advantages(rewards, alpha=0.5)
    assert first.trajectory == 1.0 and second.trajectory == -1.0
    # chunk 0: both alive, updates +1 / -1 -> A_turn +1 / -1
    assert first.turns[0] == pytest.approx(0.5 * 1 + 0.5 * 1)
    assert second.turns[0] == pytest.approx(0.5 * -1 + 0.5 * -1)
    # chunks 1, 2: only the first is alive, its A_turn is 0 there
    assert first.turns[1] == first.turns[2] == pytest.approx(0.5)
    assert 1 not in second.turns


@pytest.mark.parametrize("alpha", [0.0, 0.9, 1.0])
def test_alpha_mixes_trajectory_and_turn_terms(alpha):
    rewards = [reward(1.0, {0: -1.0}), reward(0.0, {0: 1.0})]
    first, second = group_advantages(rewards, alpha)
    assert first.turns[0] == pytest.approx(alpha * 0.5 + (1 - alpha) * -1.0)
    assert second.turns[0] == pytest.approx(alpha * -0.5 + (1 - alpha) * 1.0)


def test_turns_without_an_update_reward_take_the_trajectory_advantage():
    first, _ = group_advantages([reward(1.0, {0: 1.0}), reward(0.0, {0: 1.0})], alpha=0.9)
    assert first.of_turn(0) == pytest.approx(0.9 * 0.5)
    assert first.of_turn(5) == first.trajectory == 0.5  # an unlabelled chunk, or the answer turn


def test_std_normalisation_is_optional():
    assert centered([1.0, 3.0], std_normalize=False) == [-1.0, 1.0]
    assert centered([1.0, 3.0], std_normalize=True) == pytest.approx([-0.7071, 0.7071], abs=1e-4)
    assert centered([5.0], std_normalize=True) == [0.0]
