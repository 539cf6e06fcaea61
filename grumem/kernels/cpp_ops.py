"""Python entry points of the C++ CPU ops (csrc/, built into grumem._C by setup.py).

Each falls back to its torch reference when the extension is not built or the tensors are not on the CPU.
"""
import torch

from grumem.kernels import reference

try:
    import grumem._C  # noqa: F401  (importing registers torch.ops.grumem.*)

    AVAILABLE = True
except ImportError:
    AVAILABLE = False


def paged_attention_decode(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    context_lens: torch.Tensor,
    scale: float,
) -> torch.Tensor:
    if not AVAILABLE or q.device.type != "cpu":
        return reference.paged_attention_decode_ref(q, k_cache, v_cache, block_tables, context_lens, scale)
    return torch.ops.grumem.paged_attention_decode(q, k_cache, v_cache, block_tables, context_lens, scale)


def silu_and_mul(x: torch.Tensor) -> torch.Tensor:
    if not AVAILABLE or x.device.type != "cpu" or x.dim() != 2 or x.dtype not in (torch.float32, torch.bfloat16):
        return reference.silu_and_mul_ref(x)
    return torch.ops.grumem.silu_and_mul(x)


if AVAILABLE:

    @torch.library.register_fake("grumem::paged_attention_decode")
    def _(q, k_cache, v_cache, block_tables, context_lens, scale):
        return torch.empty_like(q)

    @torch.library.register_fake("grumem::silu_and_mul")
    def _(x):
        return x.new_empty(x.shape[0], x.shape[1] // 2)
