"""The Triton attention kernels against the torch references (TRITON_INTERPRET=1 on the CPU, see conftest.py)."""
import pytest
import torch

from grumem.kernels.paged_attention import num_splits_for, paged_attention_decode
from grumem.kernels.prefill_attention import prefill_attention
from grumem.kernels.reference import (
    paged_attention_decode_ref, prefill_attention_ref, store_kvcache_ref,
)
from grumem.kernels.store_kvcache import store_kvcache
from paged_kv import make_paged_kv

BLOCK_SIZE = 16
# (num_heads, num_kv_heads, head_dim): SmolLM2 (GQA 3), Qwen2.5-3B (GQA 8), MHA with a head_dim that is no power of 2
SHAPES = [(9, 3, 64), (16, 2, 128), (4, 4, 80)]
# NOTE: fp32 tolerance covers summation order; fp16 rounds the softmax weights before the PV product
TOLERANCES = {torch.float32: (1e-5, 1e-5), torch.float16: (3e-3, 3e-3)}


@pytest.fixture(autouse=True)
def _on_the_gpu_when_there_is_one():
    """Tensors are made on CUDA when it is there (the kernels run compiled), else on the CPU (interpreted)."""
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        yield


def test_store_kvcache_replays_the_slot_mapping():
    k_cache, v_cache = torch.randn(6, BLOCK_SIZE, 3, 80), torch.randn(6, BLOCK_SIZE, 3, 80)
    qkv = torch.randn(5, 9, 80)  # keys and values as strided views, as the model produces them
    key, value = qkv[:, 3:6], qkv[:, 6:9]
    slots = torch.tensor([3, -1, 17, 40, 6 * BLOCK_SIZE - 1])
    expected_k, expected_v = k_cache.clone(), v_cache.clone()
    store_kvcache_ref(key, value, expected_k, expected_v, slots)
    store_kvcache(key, value, k_cache, v_cache, slots)
    assert torch.equal(k_cache, expected_k) and torch.equal(v_cache, expected_v)


@pytest.mark.parametrize("dtype", TOLERANCES, ids=str)
@pytest.mark.parametrize("num_heads, num_kv_heads, head_dim", SHAPES)
def test_paged_attention_decode_matches_reference(dtype, num_heads, num_kv_heads, head_dim):
    lens = [1, BLOCK_SIZE + 1, 600]  # 600 tokens: 2 splits of the context, merged
    assert num_splits_for(600) == 2
    k_cache, v_cache, tables, _, _ = make_paged_kv(lens, num_kv_heads, head_dim, BLOCK_SIZE, dtype)
    q = torch.randn(len(lens), num_heads, head_dim).to(dtype)
    context_lens = torch.tensor(lens, dtype=torch.int32)
    out = paged_attention_decode(q, k_cache, v_cache, tables, context_lens, head_dim**-0.5)
    expected = paged_attention_decode_ref(q.float(), k_cache.float(), v_cache.float(), tables, context_lens,
                                          head_dim**-0.5)
    atol, rtol = TOLERANCES[dtype]
    torch.testing.assert_close(out, expected.to(dtype), atol=atol, rtol=rtol)


@pytest.mark.parametrize("dtype", TOLERANCES, ids=str)
@pytest.mark.parametrize("num_heads, num_kv_heads, head_dim", SHAPES)
def test_prefill_attention_after_a_cached_prefix_matches_reference(dtype, num_heads, num_kv_heads, head_dim):
    lens_k, lens_q = [1, BLOCK_SIZE + 1, 150], [1, 5, 70]  # the last len_q keys of each sequence are new
    k_cache, v_cache, tables, dense_k, dense_v = make_paged_kv(lens_k, num_kv_heads, head_dim, BLOCK_SIZE, dtype)
    q = torch.randn(sum(lens_q), num_heads, head_dim).to(dtype)
    new_k = torch.cat([dk[-n:] for dk, n in zip(dense_k, lens_q)])
    new_v = torch.cat([dv[-n:] for dv, n in zip(dense_v, lens_q)])
    cu_q = torch.tensor([0] + lens_q).cumsum(0).int()
    cu_k = torch.tensor([0] + lens_k).cumsum(0).int()
    scale = head_dim**-0.5
    out = prefill_attention(q, new_k, new_v, cu_q, cu_k, scale, k_cache, v_cache, tables)
    expected = prefill_attention_ref(q.float(), new_k.float(), new_v.float(), cu_q, cu_k, scale, k_cache.float(),
                                     v_cache.float(), tables)
    atol, rtol = TOLERANCES[dtype]
    torch.testing.assert_close(out, expected.to(dtype), atol=atol, rtol=rtol)


# NOTE: the interpreter computes bf16 wrongly (see ENVIRONMENT.md): it checks the mixed path with an fp16 cache
NARROW_CACHE = [torch.float16] + ([torch.bfloat16] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("cache_dtype", NARROW_CACHE, ids=str)
def test_kernels_read_and_write_a_narrower_cache_under_an_fp32_model(cache_dtype):
    lens_k, lens_q = [BLOCK_SIZE + 1, 90], [3, 40]
    k_cache, v_cache, tables, dense_k, dense_v = make_paged_kv(lens_k, 2, 64, BLOCK_SIZE, cache_dtype)
    key, value = torch.randn(2, 2, 64), torch.randn(2, 2, 64)
    slots = torch.tensor([5, 33])
    expected_k, expected_v = k_cache.clone(), v_cache.clone()
    store_kvcache_ref(key, value, expected_k, expected_v, slots)
    store_kvcache(key, value, k_cache, v_cache, slots)  # rounds like the reference
    assert torch.equal(k_cache, expected_k) and torch.equal(v_cache, expected_v)
    context_lens = torch.tensor(lens_k, dtype=torch.int32)
    q = torch.randn(2, 8, 64)
    torch.testing.assert_close(paged_attention_decode(q, k_cache, v_cache, tables, context_lens, 0.125),
                               paged_attention_decode_ref(q, k_cache, v_cache, tables, context_lens, 0.125),
                               atol=1e-5, rtol=1e-5)
    q = torch.randn(sum(lens_q), 8, 64)
    new_k = torch.cat([dk[-n:] for dk, n in zip(dense_k, lens_q)]).float()
    new_v = torch.cat([dv[-n:] for dv, n in zip(dense_v, lens_q)]).float()
    cu_q, cu_k = (torch.tensor([0] + lens).cumsum(0).int() for lens in (lens_q, lens_k))
    args = (q, new_k, new_v, cu_q, cu_k, 0.125, k_cache, v_cache, tables)
    torch.testing.assert_close(prefill_attention(*args), prefill_attention_ref(*args), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("num_heads, num_kv_heads, head_dim", SHAPES[:2])
def test_prefill_attention_without_cache_is_causal_per_sequence(num_heads, num_kv_heads, head_dim):
    lens = [1, BLOCK_SIZE + 1, 70]
    q = torch.randn(sum(lens), num_heads, head_dim)
    k, v = torch.randn(sum(lens), num_kv_heads, head_dim), torch.randn(sum(lens), num_kv_heads, head_dim)
    cu = torch.tensor([0] + lens).cumsum(0).int()
    out = prefill_attention(q, k, v, cu, cu, 0.1)
    torch.testing.assert_close(out, prefill_attention_ref(q, k, v, cu, cu, 0.1), atol=1e-5, rtol=1e-5)
