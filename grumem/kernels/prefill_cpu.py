"""Prefill attention of the CPU backend: torch's fused flash kernel, with a cached prefix merged by log-sum-exp.

A masked SDPA after a cached prefix runs about 2x slower than a causal one, so each sequence's queries attend to
the prefix (no mask) and to their own new tokens (causal) separately, and the two softmaxes are merged exactly.
"""
import torch

from grumem.kernels.reference import gather_kv_ref, prefill_attention_ref

_flash = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu


def _heads_major(x: torch.Tensor, group: int) -> torch.Tensor:
    """(len, heads, head_dim) -> (1, heads * group, len, head_dim), contiguous (the layout the kernel reads fastest)."""
    return x.transpose(0, 1).repeat_interleave(group, dim=0).unsqueeze(0).contiguous()


def prefill_attention_cpu(
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
    """Same contract as reference.prefill_attention_ref; k/v hold the new tokens, the prefix comes from the cache."""
    if block_tables is None or q.device.type != "cpu":
        return prefill_attention_ref(q, k, v, cu_seqlens_q, cu_seqlens_k, scale, k_cache, v_cache, block_tables)
    group = q.shape[1] // k.shape[1]
    out = torch.empty_like(q)
    cu_q, cu_k = cu_seqlens_q.tolist(), cu_seqlens_k.tolist()
    for i in range(len(cu_q) - 1):
        rows = slice(cu_q[i], cu_q[i + 1])
        prefix_len = (cu_k[i + 1] - cu_k[i]) - (cu_q[i + 1] - cu_q[i])
        q_i = _heads_major(q[rows], 1)
        new_out, new_lse = _flash(q_i, _heads_major(k[rows], group), _heads_major(v[rows], group), is_causal=True,
                                  scale=scale)
        if prefix_len > 0:
            prefix_k = _heads_major(gather_kv_ref(k_cache, block_tables[i], prefix_len, q.dtype), group)
            prefix_v = _heads_major(gather_kv_ref(v_cache, block_tables[i], prefix_len, q.dtype), group)
            old_out, old_lse = _flash(q_i, prefix_k, prefix_v, is_causal=False, scale=scale)
            lse = torch.logaddexp(new_lse, old_lse).unsqueeze(-1)  # (1, heads, len_q, 1)
            new_out = new_out * (new_lse.unsqueeze(-1) - lse).exp() + old_out * (old_lse.unsqueeze(-1) - lse).exp()
        out[rows] = new_out[0].transpose(0, 1).to(q.dtype)
    return out
