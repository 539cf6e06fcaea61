"""Python entry points of the C++ CPU ops (csrc/, built into grumem._C by setup.py).

Each falls back to its torch reference when the extension is not built, the tensors are not on the CPU, or autograd
records (the ops have no backward).
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


def _native(*tensors: torch.Tensor) -> bool:
    """Whether the C++ op serves these tensors: built, on the CPU, fp32 or bf16, no gradient to record."""
    return (AVAILABLE and not torch.is_grad_enabled()
            and all(t.device.type == "cpu" and t.dtype in (torch.float32, torch.bfloat16) for t in tensors))


def silu_and_mul(x: torch.Tensor) -> torch.Tensor:
    if not _native(x) or x.dim() != 2:
        return reference.silu_and_mul_ref(x)
    return torch.ops.grumem.silu_and_mul(x)


def rms_norm(x: torch.Tensor, residual: torch.Tensor | None, weight: torch.Tensor,
             eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    if not _native(x, weight) or x.dim() != 2 or weight.dtype != x.dtype:
        return reference.rms_norm_ref(x, residual, weight, eps)
    return torch.ops.grumem.fused_add_rms_norm(x, residual, weight, eps)


def rotary(positions: torch.Tensor, q: torch.Tensor, k: torch.Tensor,
           cos_sin_cache: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if not _native(q, k) or cos_sin_cache.dtype != torch.float32 or positions.dtype != torch.int64:
        return reference.rotary_ref(positions, q, k, cos_sin_cache)
    return torch.ops.grumem.rotary_embedding(positions, q, k, cos_sin_cache)


def store_kvcache(key: torch.Tensor, value: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                  slot_mapping: torch.Tensor) -> None:
    if not AVAILABLE or key.device.type != "cpu" or slot_mapping.dtype != torch.int64:
        return reference.store_kvcache_ref(key, value, k_cache, v_cache, slot_mapping)
    torch.ops.grumem.store_kvcache(key, value, k_cache, v_cache, slot_mapping)


if AVAILABLE:

    @torch.library.register_fake("grumem::paged_attention_decode")
    def _(q, k_cache, v_cache, block_tables, context_lens, scale):
        return torch.empty_like(q)

    @torch.library.register_fake("grumem::silu_and_mul")
    def _(x):
        return x.new_empty(x.shape[0], x.shape[1] // 2)

    @torch.library.register_fake("grumem::fused_add_rms_norm")
    def _(x, residual, weight, eps):
        return torch.empty_like(x), torch.empty_like(x)

    @torch.library.register_fake("grumem::rotary_embedding")
    def _(positions, q, k, cos_sin_cache):
        return torch.empty_like(q), torch.empty_like(k)

    @torch.library.register_fake("grumem::store_kvcache")
    def _(key, value, k_cache, v_cache, slot_mapping):
        return None
