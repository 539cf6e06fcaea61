"""Attention layer over the paged KV cache, and the attention-backend interface.

A backend supplies three ops with the signatures of kernels/reference.py: store_kvcache, prefill_attention and
paged_attention_decode. "torch" is the reference (any device); "cpu" swaps in the C++ KV store and decode ops of
csrc/ and a split prefill; "triton" runs the kernels of grumem/kernels (CUDA; the CPU only under TRITON_INTERPRET=1),
imported on first use. Other backends register themselves with `register_backend`; the engine Config picks one by
name.
"""
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from grumem.engine.context import get_context
from grumem.kernels import cpp_ops, reference
from grumem.kernels.prefill_cpu import prefill_attention_cpu


@dataclass(frozen=True)
class AttentionBackend:
    store_kvcache: Callable[..., None]
    prefill_attention: Callable[..., torch.Tensor]
    paged_attention_decode: Callable[..., torch.Tensor]


BACKENDS: dict[str, AttentionBackend] = {
    "torch": AttentionBackend(
        reference.store_kvcache_ref, reference.prefill_attention_ref, reference.paged_attention_decode_ref
    ),
    "cpu": AttentionBackend(cpp_ops.store_kvcache, prefill_attention_cpu, cpp_ops.paged_attention_decode),
}


def _triton_backend() -> AttentionBackend:
    from grumem.kernels.paged_attention import paged_attention_decode
    from grumem.kernels.prefill_attention import prefill_attention
    from grumem.kernels.store_kvcache import store_kvcache

    def prefill(*args) -> torch.Tensor:
        return prefill_attention(*args, max_seqlen_q=get_context().max_seqlen_q)  # known on the host: no sync

    return AttentionBackend(store_kvcache, prefill, paged_attention_decode)


LAZY_BACKENDS: dict[str, Callable[[], AttentionBackend]] = {"triton": _triton_backend}


def register_backend(name: str, backend: AttentionBackend) -> None:
    BACKENDS[name] = backend


def get_backend(name: str) -> AttentionBackend:
    if name not in BACKENDS and name in LAZY_BACKENDS:
        BACKENDS[name] = LAZY_BACKENDS[name]()
    if name not in BACKENDS:
        raise ValueError(f"unknown attention backend {name!r}; available: {', '.join([*BACKENDS, *LAZY_BACKENDS])}")
    return BACKENDS[name]


class Attention(nn.Module):
    """q (num_tokens, num_heads, head_dim), k/v (num_tokens, num_kv_heads, head_dim) -> (num_tokens, num_heads, head_dim).

    Without a cache (k_cache empty) every sequence in the prefill batch attends only to its own new tokens.
    """

    def __init__(self, num_heads: int, head_dim: int, scale: float, num_kv_heads: int):
        super().__init__()
        self.num_heads, self.head_dim, self.scale, self.num_kv_heads = num_heads, head_dim, scale, num_kv_heads
        self.backend = BACKENDS["torch"]
        self.k_cache = self.v_cache = torch.tensor([])

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        ctx = get_context()
        has_cache = self.k_cache.numel() > 0
        if has_cache and ctx.slot_mapping is not None:
            self.backend.store_kvcache(k, v, self.k_cache, self.v_cache, ctx.slot_mapping)
        if ctx.is_prefill:
            return self.backend.prefill_attention(
                q, k, v, ctx.cu_seqlens_q, ctx.cu_seqlens_k, self.scale,
                self.k_cache if has_cache else None, self.v_cache if has_cache else None,
                ctx.block_tables if has_cache else None,
            )
        assert has_cache, "decode needs a KV cache"
        return self.backend.paged_attention_decode(
            q, self.k_cache, self.v_cache, ctx.block_tables, ctx.context_lens, self.scale
        )
