"""The forward context: batch layout and KV-cache addressing for one model step.

Set once per step by the runner and read by every attention layer, so the layers need no extra arguments.
"""
from dataclasses import dataclass

import torch


@dataclass(slots=True)
class Context:
    is_prefill: bool = False
    cu_seqlens_q: torch.Tensor | None = None  # (num_seqs + 1,) int32, prefill only
    cu_seqlens_k: torch.Tensor | None = None  # (num_seqs + 1,) int32, prefill only
    max_seqlen_q: int = 0
    max_seqlen_k: int = 0
    slot_mapping: torch.Tensor | None = None  # (num_tokens,) int64: cache slot of each new token, -1 = skip
    context_lens: torch.Tensor | None = None  # (num_seqs,) int32, decode only
    block_tables: torch.Tensor | None = None  # (num_seqs, max_blocks) int32, padded with -1


_CONTEXT = Context()


def get_context() -> Context:
    return _CONTEXT


def set_context(**fields) -> None:
    global _CONTEXT
    _CONTEXT = Context(**fields)


def reset_context() -> None:
    global _CONTEXT
    _CONTEXT = Context()
