"""The torch reference ops (CPU backend and kernel oracle) against attention written out by hand."""
import pytest
import torch

from grumem.kernels.reference import paged_attention_decode_ref, prefill_attention_ref, store_kvcache_ref
from paged_kv import make_paged_kv

BLOCK_SIZE = 16
HEADS = [(4, 4), (8, 2)]  # (num_heads, num_kv_heads): MHA and GQA


def naive_attention(q, k, v, scale, causal_offset):
    """q (len_q, H, D), k/v (len_k, Hkv, D); query i sees keys j <= i + causal_offset."""
    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)
    scores = torch.einsum("qhd,khd->hqk", q.double(), k.double()) * scale
    allowed = torch.arange(k.shape[0])[None, :] <= torch.arange(q.shape[0])[:, None] + causal_offset
    probs = scores.masked_fill(~allowed, float("-inf")).softmax(-1)
    return torch.einsum("hqk,khd->qhd", probs, v.double()).to(q.dtype)


@pytest.mark.parametrize("num_heads, num_kv_heads", HEADS)
def test_store_kvcache_writes_slots_and_skips_negative(num_heads, num_kv_heads):
    k_cache = torch.zeros(4, BLOCK_SIZE, num_kv_heads, 8)
    v_cache = torch.zeros_like(k_cache)
    key, value = torch.randn(3, num_kv_heads, 8), torch.randn(3, num_kv_heads, 8)
    store_kvcache_ref(key, value, k_cache, v_cache, torch.tensor([17, -1, 63]))
    torch.testing.assert_close(k_cache[1, 1], key[0])
    torch.testing.assert_close(v_cache[3, 15], value[2])
    assert k_cache.count_nonzero() == 2 * num_kv_heads * 8  # the -1 slot wrote nothing


@pytest.mark.parametrize("num_heads, num_kv_heads", HEADS)
def test_prefill_without_cache_is_causal_per_sequence(num_heads, num_kv_heads):
    lens = [1, BLOCK_SIZE + 1, 40]
    q = torch.randn(sum(lens), num_heads, 32)
    k, v = torch.randn(sum(lens), num_kv_heads, 32), torch.randn(sum(lens), num_kv_heads, 32)
    cu = torch.tensor([0] + lens).cumsum(0).int()
    out = prefill_attention_ref(q, k, v, cu, cu, 0.2)
    for i in range(len(lens)):
        s, e = cu[i], cu[i + 1]
        torch.testing.assert_close(out[s:e], naive_attention(q[s:e], k[s:e], v[s:e], 0.2, 0), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("num_heads, num_kv_heads", HEADS)
def test_prefill_after_cached_prefix_reads_the_cache(num_heads, num_kv_heads):
    lens_k, lens_q = [BLOCK_SIZE + 1, 50], [1, 20]  # the last len_q keys of each sequence are the new tokens
    k_cache, v_cache, tables, dense_k, dense_v = make_paged_kv(lens_k, num_kv_heads, 32, BLOCK_SIZE)
    q = torch.randn(sum(lens_q), num_heads, 32)
    new_k = torch.cat([dk[-n:] for dk, n in zip(dense_k, lens_q)])
    new_v = torch.cat([dv[-n:] for dv, n in zip(dense_v, lens_q)])
    cu_q = torch.tensor([0] + lens_q).cumsum(0).int()
    cu_k = torch.tensor([0] + lens_k).cumsum(0).int()
    out = prefill_attention_ref(q, new_k, new_v, cu_q, cu_k, 0.2, k_cache, v_cache, tables)
    for i, (lq, lk) in enumerate(zip(lens_q, lens_k)):
        expected = naive_attention(q[cu_q[i] : cu_q[i + 1]], dense_k[i], dense_v[i], 0.2, lk - lq)
        torch.testing.assert_close(out[cu_q[i] : cu_q[i + 1]], expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("num_heads, num_kv_heads", HEADS)
def test_decode_attends_to_each_context(num_heads, num_kv_heads):
    lens = [1, BLOCK_SIZE, BLOCK_SIZE + 1, 70]
    k_cache, v_cache, tables, dense_k, dense_v = make_paged_kv(lens, num_kv_heads, 64, BLOCK_SIZE)
    q = torch.randn(len(lens), num_heads, 64)
    out = paged_attention_decode_ref(q, k_cache, v_cache, tables, torch.tensor(lens, dtype=torch.int32), 0.125)
    for i, n in enumerate(lens):
        expected = naive_attention(q[i : i + 1], dense_k[i], dense_v[i], 0.125, n - 1)[0]
        torch.testing.assert_close(out[i], expected, atol=1e-5, rtol=1e-5)


def test_decode_reference_ignores_unwritten_slots_whatever_they_hold():
    """The CPU KV cache is not zeroed: slots past a sequence's length (and -1 padding) may hold NaN."""
    torch.manual_seed(0)
    q = torch.randn(2, 4, 8)
    k_cache, v_cache = torch.full((3, 16, 2, 8), float("nan")), torch.full((3, 16, 2, 8), float("nan"))
    k_cache[1, :5], v_cache[1, :5] = torch.randn(5, 2, 8), torch.randn(5, 2, 8)
    k_cache[2, :3], v_cache[2, :3] = torch.randn(3, 2, 8), torch.randn(3, 2, 8)
    out = paged_attention_decode_ref(q, k_cache, v_cache, torch.tensor([[1, -1], [2, -1]]), torch.tensor([5, 3]), 0.3)
    clean_k, clean_v = k_cache.nan_to_num(0.0), v_cache.nan_to_num(0.0)
    expected = paged_attention_decode_ref(q, clean_k, clean_v, torch.tensor([[1, -1], [2, -1]]), torch.tensor([5, 3]),
                                          0.3)
    assert not out.isnan().any()
    torch.testing.assert_close(out, expected)
