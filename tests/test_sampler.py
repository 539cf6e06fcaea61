"""The sampler on hand-made logits: draws follow the distribution, masked tokens never come up, seeds reproduce."""
import torch

from grumem.engine.sampler import Sampler

PROBS = torch.tensor([0.5, 0.25, 0.15, 0.1, 0.0])


def draw(sampler, logits, temperature=1.0, generators=None, top_p=1.0, forced=None):
    rows = logits.shape[0]
    return sampler(logits, [temperature] * rows, [top_p] * rows, generators or [None] * rows, forced)


def test_draws_follow_the_distribution_and_skip_zero_probability_tokens():
    logits = PROBS.log().expand(20000, -1).contiguous()
    ids, logprobs = draw(Sampler(0, torch.device("cpu")), logits)
    counts = torch.bincount(torch.tensor(ids), minlength=5) / len(ids)
    torch.testing.assert_close(counts, PROBS, atol=0.012, rtol=0)
    assert counts[4] == 0
    torch.testing.assert_close(torch.tensor(logprobs), PROBS.log()[ids])


def test_masked_tokens_are_never_drawn():
    allowed = torch.tensor([False, True, False, True, False]).expand(5000, -1)
    logits = torch.zeros(5000, 5).masked_fill(~allowed, float("-inf"))  # as a logits processor leaves them
    ids, logprobs = draw(Sampler(0, torch.device("cpu")), logits, temperature=2.0)
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


def test_top_p_draws_only_from_the_nucleus_renormalised():
    logits = PROBS.log().expand(20000, -1).contiguous()
    ids, logprobs = draw(Sampler(0, torch.device("cpu")), logits, top_p=0.7)  # 0.5 + 0.25 reach 0.7
    counts = torch.bincount(torch.tensor(ids), minlength=5) / len(ids)
    torch.testing.assert_close(counts, torch.tensor([2 / 3, 1 / 3, 0, 0, 0]), atol=0.012, rtol=0)
    torch.testing.assert_close(torch.tensor(logprobs), torch.tensor([2 / 3, 1 / 3])[ids].log())
    ids, _ = draw(Sampler(0, torch.device("cpu")), logits[:100], top_p=1e-6)
    assert set(ids) == {0}  # a tiny nucleus still keeps the most likely token


def test_forced_tokens_bypass_sampling_with_logprob_zero():
    logits = PROBS.log().expand(4, -1).contiguous()
    ids, logprobs = draw(Sampler(0, torch.device("cpu")), logits, forced=[4, -1, 2, -1])
    assert ids[0] == 4 and ids[2] == 2 and ids[1] != 4 and ids[3] != 4
    assert logprobs[0] == logprobs[2] == 0.0 and logprobs[1] < 0
