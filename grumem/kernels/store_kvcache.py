"""Triton: write the new tokens' keys and values into their paged-cache slots (the first op of every attention step).

Reads and writes 2 * num_tokens * num_kv_heads * head_dim elements; reference: kernels/reference.store_kvcache_ref.
"""
import torch
import triton
import triton.language as tl


@triton.jit
def _store_kvcache_kernel(
    key_ptr, value_ptr, k_cache_ptr, v_cache_ptr, slot_mapping_ptr,
    stride_kt, stride_kh, stride_vt, stride_vh, stride_cs, stride_ch,
    NUM_KV_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr,
):
    token = tl.program_id(0)
    slot = tl.load(slot_mapping_ptr + token)
    heads, dims = tl.arange(0, BLOCK_H)[:, None], tl.arange(0, BLOCK_D)[None, :]
    mask = (heads < NUM_KV_HEADS) & (dims < HEAD_DIM) & (slot >= 0)  # slot -1: a token not to be cached
    key = tl.load(key_ptr + token * stride_kt + heads * stride_kh + dims, mask=mask)
    value = tl.load(value_ptr + token * stride_vt + heads * stride_vh + dims, mask=mask)
    cache_offsets = slot * stride_cs + heads * stride_ch + dims
    tl.store(k_cache_ptr + cache_offsets, key.to(k_cache_ptr.dtype.element_ty), mask=mask)
    tl.store(v_cache_ptr + cache_offsets, value.to(v_cache_ptr.dtype.element_ty), mask=mask)


def store_kvcache(
    key: torch.Tensor, value: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, slot_mapping: torch.Tensor
) -> None:
    """key/value (num_tokens, num_kv_heads, head_dim) into k/v_cache (num_blocks, block_size, num_kv_heads,
    head_dim) at slot_mapping (num_tokens,); slot -1 = skip."""
    num_tokens, num_kv_heads, head_dim = key.shape
    assert key.stride(-1) == value.stride(-1) == 1 and k_cache.is_contiguous() and v_cache.is_contiguous()
    assert k_cache.stride() == v_cache.stride() and k_cache.dtype == v_cache.dtype
    if num_tokens == 0:
        return
    _store_kvcache_kernel[(num_tokens,)](
        key, value, k_cache, v_cache, slot_mapping,
        key.stride(0), key.stride(1), value.stride(0), value.stride(1), k_cache.stride(1), k_cache.stride(2),
        **store_meta(num_kv_heads, head_dim),
    )


def store_meta(num_kv_heads: int, head_dim: int) -> dict:
    """The constexprs the launcher uses for this shape (also what the sm_90 compile test builds)."""
    return dict(NUM_KV_HEADS=num_kv_heads, HEAD_DIM=head_dim, BLOCK_H=triton.next_power_of_2(num_kv_heads),
                BLOCK_D=triton.next_power_of_2(head_dim))
