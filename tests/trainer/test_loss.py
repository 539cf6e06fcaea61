"""DAPO's per-token loss on hand-made logprobs: the REINFORCE gradient at ratio 1, zero gradient where the clip
decides, the dual-clip cap, the KL estimate."""
import pytest
import torch

from grumem.trainer.loss import clipped_surrogate, k3_kl

EPS_LOW, EPS_HIGH = 0.2, 0.28


def surrogate_grad(logprobs, old, advantages, dual_clip=None):
    logprobs = logprobs.clone().requires_grad_(True)
    loss, clipped = clipped_surrogate(logprobs, old, advantages, EPS_LOW, EPS_HIGH, dual_clip)
    loss.sum().backward()
    return loss.detach(), clipped, logprobs.grad


def test_at_ratio_one_the_gradient_is_reinforce():
    logits = torch.randn(6, 10, requires_grad=True)
    targets = torch.randint(0, 10, (6,))
    advantages = torch.tensor([1.0, -0.5, 0.25, 2.0, -1.0, 0.0])
    logprobs = logits.log_softmax(-1).gather(1, targets[:, None]).squeeze(1)
    loss, _ = clipped_surrogate(logprobs, logprobs.detach(), advantages, EPS_LOW, EPS_HIGH)
    (grad,) = torch.autograd.grad(loss.sum() / 6, logits, retain_graph=True)
    (expected,) = torch.autograd.grad(-(advantages * logprobs).sum() / 6, logits)
    torch.testing.assert_close(grad, expected)


@pytest.mark.parametrize("advantage, log_ratio, flat", [
    (1.0, 0.4, True),     # A > 0, ratio 1.49 > 1 + eps_high: clipped
    (1.0, 0.2, False),    # A > 0, ratio 1.22 inside the band
    (1.0, -0.5, False),   # A > 0, ratio below the band: the unclipped term is the smaller one
    (-1.0, -0.4, True),   # A < 0, ratio 0.67 < 1 - eps_low: clipped
    (-1.0, -0.1, False),  # A < 0 inside the band
    (-1.0, 0.5, False),   # A < 0, ratio above the band: still pushed down
])
def test_gradient_vanishes_exactly_where_the_clip_decides(advantage, log_ratio, flat):
    old = torch.tensor([-1.0])
    _, clipped, grad = surrogate_grad(old + log_ratio, old, torch.tensor([advantage]))
    assert bool(clipped) == flat
    assert (grad.abs() == 0).item() == flat


def test_dual_clip_caps_the_loss_of_negative_advantages():
    old = torch.zeros(2)
    advantages = torch.tensor([-1.0, 1.0])
    logprobs = torch.tensor([2.0, 2.0])  # ratio e^2 = 7.4
    plain, _, _ = surrogate_grad(logprobs, old, advantages)
    capped, _, grad = surrogate_grad(logprobs, old, advantages, dual_clip=3.0)
    assert plain[0] == pytest.approx(7.389, abs=1e-3) and capped[0] == pytest.approx(3.0)
    assert grad[0] == 0
    assert capped[1] == plain[1]  # positive advantages are untouched


def test_k3_kl_is_zero_at_equality_and_positive_otherwise():
    logprobs = torch.tensor([-1.0, -2.0, -0.5])
    assert torch.equal(k3_kl(logprobs, logprobs), torch.zeros(3))
    assert (k3_kl(logprobs, logprobs + torch.tensor([0.3, -0.3, 1.0])) > 0).all()
    p, q = torch.tensor([0.7, 0.3]), torch.tensor([0.4, 0.6])  # E_p[k3] = KL(p || q)
    expected = (p * (p / q).log()).sum()
    assert (p * k3_kl(p.log(), q.log())).sum() == pytest.approx(float(expected), rel=1e-5)


def test_truncated_importance_weights_are_capped_constants():
    from grumem.trainer.loss import truncated_is_weights

    old = torch.tensor([0.0, 0.0, -1.0], requires_grad=True)
    engine = torch.tensor([-3.0, 0.693147, -1.0])  # pi_old / pi_engine = e^3, 1/2, 1
    weights = truncated_is_weights(old, engine, cap=2.0)
    torch.testing.assert_close(weights, torch.tensor([2.0, 0.5, 1.0]))
    assert not weights.requires_grad
