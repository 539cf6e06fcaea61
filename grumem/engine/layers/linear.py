"""Linear layers whose weights are packed from several checkpoint tensors (fused qkv, fused gate_up).

Each parameter carries a `weight_loader(param, loaded, shard_id)` that copies one checkpoint tensor into its slice.
"""
import torch
from torch import nn

from grumem.engine.layers.prepacked import PrepackedWeight


def default_weight_loader(param: nn.Parameter, loaded: torch.Tensor, shard_id: str | int | None = None) -> None:
    assert shard_id is None, f"{shard_id=} for an unpacked parameter"
    if param.shape != loaded.shape:
        raise ValueError(f"checkpoint tensor has shape {tuple(loaded.shape)}, model expects {tuple(param.shape)}")
    param.data.copy_(loaded)


class Linear(PrepackedWeight, nn.Module):
    """y = x W^T (+ b), with the weight split along the output dim into named shards."""

    def __init__(self, input_size: int, shard_sizes: dict[str | int, int] | None, output_size: int, bias: bool):
        super().__init__()
        self.shard_offsets: dict[str | int, tuple[int, int]] = {}
        offset = 0
        for shard_id, size in (shard_sizes or {}).items():
            self.shard_offsets[shard_id] = (offset, size)
            offset += size
        assert not shard_sizes or offset == output_size
        self.weight = nn.Parameter(torch.empty(output_size, input_size))
        self.weight.weight_loader = self.weight_loader
        if bias:
            self.bias = nn.Parameter(torch.empty(output_size))
            self.bias.weight_loader = self.weight_loader
        else:
            self.register_parameter("bias", None)

    def weight_loader(self, param: nn.Parameter, loaded: torch.Tensor, shard_id: str | int | None = None) -> None:
        if shard_id is None:
            return default_weight_loader(param, loaded)
        offset, size = self.shard_offsets[shard_id]
        target = param.data.narrow(0, offset, size)
        if target.shape != loaded.shape:
            raise ValueError(f"shard {shard_id!r}: checkpoint shape {tuple(loaded.shape)}, expected {tuple(target.shape)}")
        target.copy_(loaded)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_linear(x, self.bias)


class ReplicatedLinear(Linear):
    def __init__(self, input_size: int, output_size: int, bias: bool = False):
        super().__init__(input_size, None, output_size, bias)


class QKVLinear(Linear):
    """q, k and v projections in one matmul; shards "q", "k", "v"."""

    def __init__(self, hidden_size: int, head_dim: int, num_heads: int, num_kv_heads: int, bias: bool):
        sizes = {"q": num_heads * head_dim, "k": num_kv_heads * head_dim, "v": num_kv_heads * head_dim}
        super().__init__(hidden_size, sizes, sum(sizes.values()), bias)


class MergedLinear(Linear):
    """Several projections of the same input in one matmul; shards 0, 1, ... (gate_up: 0 = gate, 1 = up)."""

    def __init__(self, input_size: int, output_sizes: list[int], bias: bool = False):
        super().__init__(input_size, dict(enumerate(output_sizes)), sum(output_sizes), bias)
