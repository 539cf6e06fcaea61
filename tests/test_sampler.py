"""The sampler on hand-made logits: draws follow the distribution, masked tokens never come up, seeds reproduce."""
import torch

from grumem.engine.sampler import Sampler

PROBS = torch.tensor([0.5, 0.25, 0.15, 0.1, 0.0])


def draw(sampler, logits, temperature=1.0, generators=None, allowed=None):
    rows = logits.shape[0]
    return sampler(logits, [temperature] * rows, [1.0] * rows, generators or [None] * rows, allowed)


def test_draws_follow_the_distribution_and_skip_zero_probability_tokens():
    logits = PROBS.log().expand(20000, -1).contiguous()
    ids, logprobs = draw(Sampler(0, torch.device("cpu")), logits)
    counts = torch.bincount(torch.tensor(ids), minlength=5) / len(ids)
    torch.testing.assert_close(counts, PROBS, atol=0.012, rtol=0)
    assert counts[4] == 0
    torch.testing.assert_close(torch.tensor(logprobs), PROBS.log()[ids])


def test_masked_tokens_are_never_drawn():
    logits = torch.zeros(5000, 5)
    allowed = torch.tensor([False, True, False, True, False]).expand(5000, -1)
    ids, logprobs = draw(Sampler(0, torch.device("cpu")), logits, temperature=2.0, allowed=allowed)
    assert set(ids) == {1, 3}
    torch.testing.assert_close(torch.tensor(logprobs), torch.full((5000,), 0.5).log())


def test_a_seeded_row_draws_the_same_token_wherever_it_sits():
    logits = torch.randn(8, 1000)
    seeded = [torch.Generator().manual_seed(s) for s in range(8)]
    first, _ = draw(Sampler(0, torch.device("cpu")), logits, generators=seeded)
    order = list(reversed(range(8)))
    reseeded = [torch.Generator().manual_seed(s) for s in order]
    second, _ = draw(Sampler(1, torch.device("cpu")), logits[order], generators=reseeded)
    assert second == [first[i] for i in order]


def test_greedy_rows_take_the_argmax_beside_sampled_rows():
    logits = torch.randn(6, 50)
    sampler = Sampler(0, torch.device("cpu"))
    ids, _ = sampler(logits, [0.0, 1.0] * 3, [1.0] * 6, [None] * 6)
    assert ids[::2] == logits[::2].argmax(-1).tolist()
