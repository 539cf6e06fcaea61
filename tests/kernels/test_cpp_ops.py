"""The C++ CPU ops (csrc/) against their torch references, plus torch.library.opcheck."""
import pytest
import torch

from grumem.kernels import cpp_ops
from grumem.kernels.reference import (paged_attention_decode_ref, rms_norm_ref, rotary_ref, silu_and_mul_ref,
                                     store_kvcache_ref)
from paged_kv import make_paged_kv

pytestmark = pytest.mark.skipif(not cpp_ops.AVAILABLE, reason="grumem._C is not built")

# NOTE: fp32 tolerance covers summation order; fp16/bf16 outputs are rounded once from fp32 accumulators
TOLERANCES = {torch.float32: (1e-5, 1e-5), torch.float16: (2e-3, 2e-3), torch.bfloat16: (1.6e-2, 1.6e-2)}


@pytest.mark.parametrize("dtype", TOLERANCES, ids=str)
@pytest.mark.parametrize("num_heads, num_kv_heads, head_dim", [(8, 8, 64), (9, 3, 64), (16, 2, 128), (6, 2, 80)])
def test_paged_attention_decode_matches_reference(dtype, num_heads, num_kv_heads, head_dim):
    lens = [1, 16, 17, 600]  # 600 spans three 256-token split-K chunks that must be merged
    k_cache, v_cache, tables, _, _ = make_paged_kv(lens, num_kv_heads, head_dim, 16, dtype)
    q = torch.randn(len(lens), num_heads, head_dim).to(dtype)
    context_lens = torch.tensor(lens, dtype=torch.int32)
    out = cpp_ops.paged_attention_decode(q, k_cache, v_cache, tables, context_lens, head_dim**-0.5)
    expected = paged_attention_decode_ref(
        q.float(), k_cache.float(), v_cache.float(), tables, context_lens, head_dim**-0.5
    ).to(dtype)
    atol, rtol = TOLERANCES[dtype]
    torch.testing.assert_close(out, expected, atol=atol, rtol=rtol)


def test_paged_attention_decode_reads_a_narrower_cache():
    """An fp32 model over a bf16 cache: the op widens each row it reads, as the reference does."""
    lens = [1, 17, 600]
    k_cache, v_cache, tables, _, _ = make_paged_kv(lens, 3, 64, 16, torch.bfloat16)
    q = torch.randn(len(lens), 9, 64)
    context_lens = torch.tensor(lens, dtype=torch.int32)
    out = cpp_ops.paged_attention_decode(q, k_cache, v_cache, tables, context_lens, 0.125)
    assert out.dtype == torch.float32
    expected = paged_attention_decode_ref(q, k_cache, v_cache, tables, context_lens, 0.125)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_paged_attention_decode_opcheck():
    k_cache, v_cache, tables, _, _ = make_paged_kv([3, 20], 2, 16, 16)
    q = torch.randn(2, 4, 16)
    args = (q, k_cache, v_cache, tables, torch.tensor([3, 20], dtype=torch.int32), 0.25)
    torch.library.opcheck(torch.ops.grumem.paged_attention_decode.default, args)


def test_paged_attention_decode_rejects_bad_shapes():
    k_cache, v_cache, tables, _, _ = make_paged_kv([3], 2, 16, 16)
    with pytest.raises(RuntimeError, match="head counts or head_dim"):
        torch.ops.grumem.paged_attention_decode(torch.randn(1, 3, 16), k_cache, v_cache, tables,
                                                torch.tensor([3], dtype=torch.int32), 0.25)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("rows, d", [(1, 8), (7, 1536), (300, 40)])
def test_silu_and_mul_matches_reference(dtype, rows, d):
    x = (torch.randn(rows, 2 * d) * 4).to(dtype)
    out = torch.ops.grumem.silu_and_mul(x)
    assert out.shape == (rows, d) and out.dtype == dtype
    expected = silu_and_mul_ref(x.float()).to(dtype)  # the op rounds once, from fp32
    torch.testing.assert_close(out, expected, **({} if dtype == torch.float32 else dict(atol=1e-2, rtol=1e-2)))


def test_silu_and_mul_opcheck_and_bad_shape():
    torch.library.opcheck(torch.ops.grumem.silu_and_mul.default, (torch.randn(5, 12),))
    with pytest.raises(RuntimeError, match="2 \\* d"):
        torch.ops.grumem.silu_and_mul(torch.randn(5, 7))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("with_residual", [False, True], ids=["plain", "residual"])
@pytest.mark.parametrize("rows, d", [(1, 576), (300, 40)])
def test_fused_add_rms_norm_matches_reference(dtype, with_residual, rows, d):
    x, residual = (torch.randn(rows, d) * 3).to(dtype), torch.randn(rows, d).to(dtype) if with_residual else None
    weight = (torch.rand(d) + 0.5).to(dtype)
    out, res = torch.ops.grumem.fused_add_rms_norm(x, residual, weight, 1e-5)
    expected, expected_res = rms_norm_ref(x, residual, weight, 1e-5)
    torch.testing.assert_close(res, expected_res, atol=0, rtol=0)  # the add rounds as torch's does
    # fp32: summation order only; bf16: one rounding of the product may differ by an ulp
    torch.testing.assert_close(out, expected, **({} if dtype == torch.float32 else dict(atol=2e-2, rtol=1e-2)))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_rotary_embedding_matches_reference(dtype):
    cache = torch.cat([torch.randn(50, 32).cos(), torch.randn(50, 32).sin()], dim=-1)
    positions = torch.tensor([0, 7, 49, 3])
    qkv = torch.randn(4, 9 * 64 + 2 * 3 * 64).to(dtype)
    q, k = qkv[:, : 9 * 64].view(4, 9, 64), qkv[:, 9 * 64 : 12 * 64].view(4, 3, 64)  # strided views, as the model's
    out_q, out_k = torch.ops.grumem.rotary_embedding(positions, q, k, cache)
    ref_q, ref_k = rotary_ref(positions, q.float(), k.float(), cache)  # the op rounds once, from fp32
    tolerance = {} if dtype == torch.float32 else dict(atol=2e-2, rtol=1e-2)
    torch.testing.assert_close(out_q, ref_q.to(dtype), **tolerance)
    torch.testing.assert_close(out_k, ref_k.to(dtype), **tolerance)


@pytest.mark.parametrize("cache_dtype", [torch.float32, torch.bfloat16], ids=str)
def test_store_kvcache_matches_reference(cache_dtype):
    key, value = torch.randn(4, 3, 16), torch.randn(4, 3, 16)
    slots = torch.tensor([17, -1, 63, 0])
    caches = [torch.zeros(4, 16, 3, 16, dtype=cache_dtype) for _ in range(4)]
    torch.ops.grumem.store_kvcache(key, value, caches[0], caches[1], slots)
    store_kvcache_ref(key, value, caches[2], caches[3], slots)
    assert torch.equal(caches[0], caches[2]) and torch.equal(caches[1], caches[3])
    assert caches[0].flatten(0, 1)[1].abs().sum() == 0  # slot -1 wrote nothing: slot 1 stays empty


def test_norm_rotary_store_opcheck_and_bad_input():
    x, weight = torch.randn(3, 8), torch.rand(8)
    torch.library.opcheck(torch.ops.grumem.fused_add_rms_norm.default, (x, torch.randn(3, 8), weight, 1e-6))
    cache = torch.randn(10, 16)
    torch.library.opcheck(torch.ops.grumem.rotary_embedding.default,
                          (torch.tensor([1, 2]), torch.randn(2, 4, 16), torch.randn(2, 2, 16), cache))
    with pytest.raises(RuntimeError, match="weight \\(d,\\)"):
        torch.ops.grumem.fused_add_rms_norm(x, None, torch.rand(7), 1e-6)
    with pytest.raises(RuntimeError, match="position out of range"):
        torch.ops.grumem.rotary_embedding(torch.tensor([10]), torch.randn(1, 4, 16), torch.randn(1, 2, 16), cache)
    k_cache = torch.zeros(2, 4, 2, 16)
    with pytest.raises(RuntimeError, match="slot out of range"):
        torch.ops.grumem.store_kvcache(torch.randn(1, 2, 16), torch.randn(1, 2, 16), k_cache, k_cache.clone(),
                                       torch.tensor([8]))
