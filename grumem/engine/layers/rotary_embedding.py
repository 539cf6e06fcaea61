"""Rotary position embedding (neox half-rotation) with the config's theta and scaling.

Frequencies come from transformers' rope parameter functions so every static scaling type (default, linear,
llama3, yarn, longrope) matches the reference exactly; runtime-dependent types (dynamic NTK) are refused.
"""
import torch
from torch import nn
from transformers import PretrainedConfig
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

from grumem.kernels import cpp_ops

SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3", "yarn", "longrope")


def rope_inv_freq(config: PretrainedConfig) -> tuple[torch.Tensor, float]:
    """Returns (inv_freq of shape (head_dim // 2,), attention_scaling)."""
    rope_type = (getattr(config, "rope_parameters", None) or {}).get("rope_type", "default")
    if rope_type not in SUPPORTED_ROPE_TYPES:
        raise ValueError(f"rope_type {rope_type!r} is not supported; supported: {', '.join(SUPPORTED_ROPE_TYPES)}")
    if rope_type == "default":
        theta = config.rope_parameters["rope_theta"]
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        return 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim), 1.0
    inv_freq, scaling = ROPE_INIT_FUNCTIONS[rope_type](config, torch.device("cpu"))
    return inv_freq.float(), float(scaling)


class RotaryEmbedding(nn.Module):
    def __init__(self, config: PretrainedConfig, max_position: int):
        super().__init__()
        inv_freq, scaling = rope_inv_freq(config)
        freqs = torch.outer(torch.arange(max_position, dtype=torch.float32), inv_freq)
        # (max_position, head_dim): [cos | sin] halves, fp32 as in transformers
        self.register_buffer("cos_sin_cache", torch.cat([freqs.cos(), freqs.sin()], dim=-1) * scaling, persistent=False)

    def forward(self, positions: torch.Tensor, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return cpp_ops.rotary(positions, q, k, self.cos_sin_cache)
