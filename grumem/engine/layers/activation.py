"""SwiGLU activation on the packed gate_up projection."""
import torch
from torch import nn

from grumem.kernels import cpp_ops, reference


class SiluAndMul(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():  # the fused op has no backward
            return reference.silu_and_mul_ref(x)
        return cpp_ops.silu_and_mul(x)
