"""Triton: causal varlen prefill attention, reading the keys of a cached prefix through the block tables.

Sequence i's len_q queries are the last positions of its len_k keys: query j sees keys up to len_k - len_q + j.
With block tables (PAGED) all len_k keys come from the paged cache (the new ones were stored first); without, from
k/v themselves. One program per (query block, sequence, head), online softmax over key blocks (flash attention).
Compute-bound: 4 * len_q * len_k * head_dim FLOPs per head, halved by causality. Reference:
kernels/reference.prefill_attention_ref.
"""
import torch
import triton
import triton.language as tl

from grumem.kernels.online_softmax import online_softmax_update


@triton.jit
def _prefill_attention_kernel(
    q_ptr, k_ptr, v_ptr, out_ptr, cu_seqlens_q_ptr, cu_seqlens_k_ptr, block_tables_ptr, scale,
    stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh, stride_ot, stride_oh, stride_bs,
    GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, CACHE_BLOCK: tl.constexpr, PAGED: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, PRECISION: tl.constexpr,
):
    m_block, seq, head = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    q_start, k_start = tl.load(cu_seqlens_q_ptr + seq), tl.load(cu_seqlens_k_ptr + seq)
    len_q = tl.load(cu_seqlens_q_ptr + seq + 1) - q_start
    len_k = tl.load(cu_seqlens_k_ptr + seq + 1) - k_start
    prefix = len_k - len_q
    kv_head = head // GROUP

    rows, dims = m_block * BLOCK_M + tl.arange(0, BLOCK_M), tl.arange(0, BLOCK_D)
    row_mask, dim_mask = rows < len_q, dims < HEAD_DIM
    q = tl.load(q_ptr + (q_start + rows[:, None]) * stride_qt + head * stride_qh + dims[None, :],
                mask=row_mask[:, None] & dim_mask[None, :], other=0.0)  # (BLOCK_M, BLOCK_D)

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    last_key = tl.minimum(len_k, prefix + (m_block + 1) * BLOCK_M)  # causal: no query here sees past it
    last_key = tl.where(m_block * BLOCK_M < len_q, last_key, 0)
    for n0 in range(0, last_key, BLOCK_N):
        keys = n0 + tl.arange(0, BLOCK_N)
        valid = keys < last_key
        if PAGED:
            blocks = tl.load(block_tables_ptr + seq * stride_bs + keys // CACHE_BLOCK, mask=valid, other=0)
            k_rows = blocks * CACHE_BLOCK + keys % CACHE_BLOCK  # a slot: caches are (slots, heads, dim) here
        else:
            k_rows = k_start + keys
        kv_mask = valid[:, None] & dim_mask[None, :]
        k = tl.load(k_ptr + k_rows[:, None] * stride_kt + kv_head * stride_kh + dims[None, :], mask=kv_mask,
                    other=0.0).to(q.dtype)
        v = tl.load(v_ptr + k_rows[:, None] * stride_vt + kv_head * stride_vh + dims[None, :], mask=kv_mask,
                    other=0.0).to(q.dtype)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * scale  # (BLOCK_M, BLOCK_N)
        visible = valid[None, :] & (keys[None, :] <= prefix + rows[:, None])
        s = tl.where(visible, s, float("-inf"))
        m_i, l_i, acc = online_softmax_update(s, v, m_i, l_i, acc, PRECISION)

    out = acc / tl.where(l_i > 0, l_i, 1.0)[:, None]
    tl.store(out_ptr + (q_start + rows[:, None]) * stride_ot + head * stride_oh + dims[None, :],
             out.to(out_ptr.dtype.element_ty), mask=row_mask[:, None] & dim_mask[None, :])


def prefill_meta(num_heads: int, num_kv_heads: int, head_dim: int, cache_block: int, paged: bool,
                 dtype: torch.dtype) -> dict:
    """The constexprs the launcher uses for this shape (also what the sm_90 compile test builds)."""
    return dict(GROUP=num_heads // num_kv_heads, HEAD_DIM=head_dim, CACHE_BLOCK=cache_block, PAGED=paged,
                BLOCK_M=64, BLOCK_N=32, BLOCK_D=triton.next_power_of_2(head_dim),
                PRECISION="ieee" if dtype == torch.float32 else "tf32")


def prefill_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    cu_seqlens_k: torch.Tensor,
    scale: float,
    k_cache: torch.Tensor | None = None,
    v_cache: torch.Tensor | None = None,
    block_tables: torch.Tensor | None = None,
    max_seqlen_q: int | None = None,
) -> torch.Tensor:
    """Same contract as reference.prefill_attention_ref. q (num_tokens, num_heads, head_dim), k/v (num_tokens,
    num_kv_heads, head_dim); with block_tables the keys come from the caches (num_blocks, block_size, heads, dim)."""
    num_heads, head_dim = q.shape[1:]
    num_kv_heads = k.shape[1]
    num_seqs = cu_seqlens_q.numel() - 1
    if max_seqlen_q is None:
        max_seqlen_q = int((cu_seqlens_q[1:] - cu_seqlens_q[:-1]).max())
    paged = block_tables is not None
    if paged:
        cache_block = k_cache.shape[1]
        k, v = k_cache.flatten(0, 1), v_cache.flatten(0, 1)  # (slots, num_kv_heads, head_dim)
    else:
        cache_block, block_tables = 1, cu_seqlens_q  # unused placeholders
    assert q.stride(-1) == k.stride(-1) == v.stride(-1) == 1 and num_heads % num_kv_heads == 0
    out = torch.empty_like(q)
    meta = prefill_meta(num_heads, num_kv_heads, head_dim, cache_block, paged, q.dtype)
    _prefill_attention_kernel[(triton.cdiv(max_seqlen_q, meta["BLOCK_M"]), num_seqs, num_heads)](
        q, k, v, out, cu_seqlens_q, cu_seqlens_k, block_tables, scale,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1), out.stride(0), out.stride(1),
        block_tables.stride(0), **meta,
    )
    return out
