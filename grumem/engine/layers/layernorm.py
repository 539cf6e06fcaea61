"""RMSNorm, optionally fused with the residual add that precedes it (one C++ pass on the CPU)."""
import torch
from torch import nn

from grumem.kernels import cpp_ops


class RMSNorm(nn.Module):
    def __init__(self, hidden_size: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(hidden_size))

    def forward(
        self, x: torch.Tensor, residual: torch.Tensor | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        normed, residual_out = cpp_ops.rms_norm(x, residual, self.weight, self.eps)
        return normed if residual is None else (normed, residual_out)
