"""Torch references of every op: correct on any device, the CPU attention backend and the oracle for kernel tests.

KV-cache layout: (num_blocks, block_size, num_kv_heads, head_dim); slot = block_id * block_size + offset. The cache
may hold a narrower dtype than the model (kv_cache_dtype): stores round into it, reads widen to q's dtype.
"""
import torch
import torch.nn.functional as F


def store_kvcache_ref(
    key: torch.Tensor, value: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, slot_mapping: torch.Tensor
) -> None:
    """Writes key/value (num_tokens, num_kv_heads, head_dim) into their cache slots; slot -1 means skip."""
    keep = slot_mapping >= 0
    slots = slot_mapping[keep]
    k_cache.view(-1, *k_cache.shape[2:])[slots] = key[keep].to(k_cache.dtype)
    v_cache.view(-1, *v_cache.shape[2:])[slots] = value[keep].to(v_cache.dtype)


def gather_kv_ref(cache: torch.Tensor, block_table: torch.Tensor, length: int, dtype: torch.dtype) -> torch.Tensor:
    """The first `length` cached tokens of one sequence: (length, num_kv_heads, head_dim), in dtype."""
    block_size = cache.shape[1]
    num_blocks = (length + block_size - 1) // block_size
    return cache[block_table[:num_blocks].long()].flatten(0, 1)[:length].to(dtype)


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, scale: float) -> torch.Tensor:
    """q (batch, num_heads, len_q, head_dim), k/v (batch, num_kv_heads, len_k, head_dim); mask True = keep, None =
    causal over equal lengths."""
    # NOTE: torch's fused CPU kernel runs about 1.4x faster on contiguous head-major inputs with the KV heads
    # expanded than on strided views with enable_gqa
    group = q.shape[1] // k.shape[1]
    q, k, v = q.contiguous(), k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None, scale=scale)


def prefill_attention_ref(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    cu_seqlens_k: torch.Tensor,
    scale: float,
    k_cache: torch.Tensor | None = None,
    v_cache: torch.Tensor | None = None,
    block_tables: torch.Tensor | None = None,
) -> torch.Tensor:
    """Causal varlen attention. q (num_tokens, num_heads, head_dim), k/v (num_tokens, num_kv_heads, head_dim).

    Sequence i has queries q[cu_seqlens_q[i]:cu_seqlens_q[i+1]] at the last positions of its len_k keys. With
    block_tables, the keys (a cached prefix plus the new tokens) are read from the cache; otherwise from k/v.
    """
    out = torch.empty_like(q)
    cu_q, cu_k = cu_seqlens_q.tolist(), cu_seqlens_k.tolist()
    for i in range(len(cu_q) - 1):
        len_q, len_k = cu_q[i + 1] - cu_q[i], cu_k[i + 1] - cu_k[i]
        if block_tables is None:
            k_i, v_i = k[cu_k[i] : cu_k[i + 1]], v[cu_k[i] : cu_k[i + 1]]
        else:
            k_i = gather_kv_ref(k_cache, block_tables[i], len_k, q.dtype)
            v_i = gather_kv_ref(v_cache, block_tables[i], len_k, q.dtype)
        mask = None  # causal
        if len_k != len_q:  # queries sit after a cached prefix: query j sees keys up to len_k - len_q + j
            rows = torch.arange(len_q, device=q.device).unsqueeze(1) + (len_k - len_q)
            mask = torch.arange(len_k, device=q.device).unsqueeze(0) <= rows  # (len_q, len_k)
        q_i, k_i, v_i = (x.transpose(0, 1).unsqueeze(0) for x in (q[cu_q[i] : cu_q[i + 1]], k_i, v_i))
        out[cu_q[i] : cu_q[i + 1]] = _attend(q_i, k_i, v_i, mask, scale)[0].transpose(0, 1)
    return out


def paged_attention_decode_ref(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    context_lens: torch.Tensor,
    scale: float,
) -> torch.Tensor:
    """One query token per sequence. q (num_seqs, num_heads, head_dim) -> same shape."""
    block_size = k_cache.shape[1]
    max_len = block_tables.shape[1] * block_size
    blocks = block_tables.clamp(min=0).long()  # -1 padding reads block 0 and is masked out below
    mask = torch.arange(max_len, device=q.device).unsqueeze(0) < context_lens.unsqueeze(1)  # (num_seqs, max_len)
    # slots past a sequence's length were never written (the CPU cache is not zeroed): a NaN there would survive
    # the attention mask (0 * NaN), so they are zeroed before use
    keep = mask[:, None, :, None]
    k = k_cache[blocks].flatten(1, 2).transpose(1, 2).to(q.dtype).masked_fill(~keep, 0)  # (seqs, kv_heads, len, dim)
    v = v_cache[blocks].flatten(1, 2).transpose(1, 2).to(q.dtype).masked_fill(~keep, 0)
    return _attend(q.unsqueeze(2), k, v, mask[:, None, None, :], scale).squeeze(2)


def rms_norm_ref(
    x: torch.Tensor, residual: torch.Tensor | None, weight: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight * x' / rms(x'), x') with x' = x + residual (x without one); the variance in fp32 as in transformers,
    or bf16 logits drift."""
    if residual is not None:
        x = x + residual
    wide = x.float()
    return weight * (wide * torch.rsqrt(wide.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype), x


def rotary_ref(positions: torch.Tensor, q: torch.Tensor, k: torch.Tensor, cos_sin_cache: torch.Tensor):
    """Neox half-rotation of q and k at positions; cos_sin_cache (max_position, head_dim) holds [cos | sin]."""
    cos, sin = cos_sin_cache[positions].unsqueeze(1).chunk(2, dim=-1)  # (num_tokens, 1, head_dim // 2)

    def rotate(x: torch.Tensor) -> torch.Tensor:
        x1, x2 = x.chunk(2, dim=-1)
        c, s = cos.to(x.dtype), sin.to(x.dtype)
        return torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], dim=-1)

    return rotate(q), rotate(k)


def silu_and_mul_ref(x: torch.Tensor) -> torch.Tensor:
    """SwiGLU on a packed [gate | up] projection: silu(gate) * up."""
    gate, up = x.chunk(2, dim=-1)
    return F.silu(gate) * up
