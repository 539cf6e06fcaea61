"""Triton: decode attention over the paged KV cache, split over the context (split-KV), then merged.

One program per (sequence, KV head, split) reads its share of the cached keys/values once for all the query heads
of its group (GQA) and writes a partial output with its log-sum-exp; a second kernel merges the splits. Reads
2 * context_len * num_kv_heads * head_dim cache elements per sequence: memory-bound, measured in GB/s.
Reference: kernels/reference.paged_attention_decode_ref.
"""
import torch
import triton
import triton.language as tl

from grumem.kernels.online_softmax import online_softmax_update


@triton.jit
def _paged_attention_decode_kernel(
    q_ptr, k_cache_ptr, v_cache_ptr, block_tables_ptr, context_lens_ptr, partial_ptr, lse_ptr, scale,
    stride_qs, stride_qh, stride_cb, stride_ct, stride_ch, stride_bs,
    stride_ps, stride_ph, stride_pk, stride_ls, stride_lh,
    GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, CACHE_BLOCK: tl.constexpr, NUM_SPLITS: tl.constexpr,
    BLOCK_H: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, PRECISION: tl.constexpr,
):
    seq, kv_head, split = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    context_len = tl.load(context_lens_ptr + seq)
    per_split = tl.cdiv(tl.cdiv(context_len, NUM_SPLITS), BLOCK_N) * BLOCK_N
    start = split * per_split
    end = tl.minimum(start + per_split, context_len)

    rows, dims = tl.arange(0, BLOCK_H), tl.arange(0, BLOCK_D)
    heads = kv_head * GROUP + rows
    row_mask, dim_mask = rows < GROUP, dims < HEAD_DIM
    q = tl.load(q_ptr + seq * stride_qs + heads[:, None] * stride_qh + dims[None, :],
                mask=row_mask[:, None] & dim_mask[None, :], other=0.0)  # (BLOCK_H, BLOCK_D)

    m_i = tl.full([BLOCK_H], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_H], tl.float32)
    acc = tl.zeros([BLOCK_H, BLOCK_D], tl.float32)
    for n0 in range(start, end, BLOCK_N):
        positions = n0 + tl.arange(0, BLOCK_N)
        valid = positions < end
        blocks = tl.load(block_tables_ptr + seq * stride_bs + positions // CACHE_BLOCK, mask=valid, other=0)
        offsets = blocks * stride_cb + (positions % CACHE_BLOCK) * stride_ct + kv_head * stride_ch
        kv_mask = valid[:, None] & dim_mask[None, :]
        k = tl.load(k_cache_ptr + offsets[:, None] + dims[None, :], mask=kv_mask, other=0.0).to(q.dtype)
        v = tl.load(v_cache_ptr + offsets[:, None] + dims[None, :], mask=kv_mask, other=0.0).to(q.dtype)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * scale  # (BLOCK_H, BLOCK_N)
        s = tl.where(valid[None, :], s, float("-inf"))
        m_i, l_i, acc = online_softmax_update(s, v, m_i, l_i, acc, PRECISION)

    # an empty split (context shorter than the others) leaves l_i = 0: lse = -inf, weight 0 in the merge
    out = acc / tl.where(l_i > 0, l_i, 1.0)[:, None]
    tl.store(partial_ptr + seq * stride_ps + heads[:, None] * stride_ph + split * stride_pk + dims[None, :], out,
             mask=row_mask[:, None] & dim_mask[None, :])
    tl.store(lse_ptr + seq * stride_ls + heads * stride_lh + split, m_i + tl.log(tl.where(l_i > 0, l_i, 1.0)),
             mask=row_mask)


@triton.jit
def _merge_splits_kernel(
    partial_ptr, lse_ptr, out_ptr, stride_ps, stride_ph, stride_pk, stride_ls, stride_lh, stride_os, stride_oh,
    HEAD_DIM: tl.constexpr, NUM_SPLITS: tl.constexpr, BLOCK_D: tl.constexpr,
):
    seq, head = tl.program_id(0), tl.program_id(1)
    splits, dims = tl.arange(0, NUM_SPLITS), tl.arange(0, BLOCK_D)
    lse = tl.load(lse_ptr + seq * stride_ls + head * stride_lh + splits)
    weights = tl.exp(lse - tl.max(lse, axis=0))
    partial = tl.load(partial_ptr + seq * stride_ps + head * stride_ph + splits[:, None] * stride_pk + dims[None, :],
                      mask=dims[None, :] < HEAD_DIM, other=0.0)
    out = tl.sum(partial * weights[:, None], axis=0) / tl.sum(weights, axis=0)
    tl.store(out_ptr + seq * stride_os + head * stride_oh + dims, out.to(out_ptr.dtype.element_ty),
             mask=dims < HEAD_DIM)


def decode_meta(num_heads: int, num_kv_heads: int, head_dim: int, cache_block: int, max_context: int,
                dtype: torch.dtype) -> dict:
    """The constexprs the launcher uses for this shape (also what the sm_90 compile test builds)."""
    group = num_heads // num_kv_heads
    return dict(GROUP=group, HEAD_DIM=head_dim, CACHE_BLOCK=cache_block, NUM_SPLITS=num_splits_for(max_context),
                BLOCK_H=max(16, triton.next_power_of_2(group)), BLOCK_N=64, BLOCK_D=triton.next_power_of_2(head_dim),
                PRECISION="ieee" if dtype == torch.float32 else "tf32")  # tl.dot wants M >= 16: pad the group


def num_splits_for(max_context: int) -> int:
    """Splits of the context: enough programs to fill a GPU at small batch, each reading >= 512 tokens."""
    return min(16, triton.next_power_of_2(triton.cdiv(max_context, 512)))


def paged_attention_decode(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    context_lens: torch.Tensor,
    scale: float,
) -> torch.Tensor:
    """One query token per sequence. q (num_seqs, num_heads, head_dim), caches (num_blocks, block_size,
    num_kv_heads, head_dim), block_tables (num_seqs, max_blocks) int32, context_lens (num_seqs,) -> like q."""
    num_seqs, num_heads, head_dim = q.shape
    _, cache_block, num_kv_heads, _ = k_cache.shape
    assert q.stride(-1) == 1 and k_cache.is_contiguous() and v_cache.stride() == k_cache.stride()
    assert num_heads % num_kv_heads == 0 and block_tables.dtype == torch.int32
    meta = decode_meta(num_heads, num_kv_heads, head_dim, cache_block, block_tables.shape[1] * cache_block, q.dtype)
    num_splits, block_d = meta["NUM_SPLITS"], meta["BLOCK_D"]
    partial = torch.empty(num_seqs, num_heads, num_splits, block_d, dtype=torch.float32, device=q.device)
    lse = torch.empty(num_seqs, num_heads, num_splits, dtype=torch.float32, device=q.device)
    out = torch.empty_like(q)
    _paged_attention_decode_kernel[(num_seqs, num_kv_heads, num_splits)](
        q, k_cache, v_cache, block_tables, context_lens, partial, lse, scale,
        q.stride(0), q.stride(1), k_cache.stride(0), k_cache.stride(1), k_cache.stride(2), block_tables.stride(0),
        partial.stride(0), partial.stride(1), partial.stride(2), lse.stride(0), lse.stride(1), **meta,
    )
    _merge_splits_kernel[(num_seqs, num_heads)](
        partial, lse, out, partial.stride(0), partial.stride(1), partial.stride(2), lse.stride(0), lse.stride(1),
        out.stride(0), out.stride(1), HEAD_DIM=head_dim, NUM_SPLITS=num_splits, BLOCK_D=block_d,
    )
    return out
