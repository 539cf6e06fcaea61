"""The memory loop's floor on this CPU: the least time any engine needs for a loop's work at the measured GEMM
throughput and read bandwidth, so that each system's time reads as a multiple of it.

- prefill: every prompt token not served from a cache costs 2 x (linear parameters below the LM head) FLOPs at the
  GEMM rate of a 1024-row prepacked matmul (attention FLOPs left out: a lower bound);
- decode: with every document in one batch, a step reads all linear weights once (LM head included) and each live
  document's KV cache, at the rate of a large sequential read; generated / documents steps at least.
"""
import time
from dataclasses import dataclass

import torch

from grumem.engine.layers.prepacked import packed_linear, prepack


@dataclass(frozen=True)
class ModelCosts:
    linear_params: int  # below the LM head: the prefill's GEMM work per token is twice this
    head_params: int
    kv_bytes_per_token: int
    itemsize: int

    @classmethod
    def of(cls, config, dtype: torch.dtype) -> "ModelCosts":
        hidden, inter, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
        head_dim = getattr(config, "head_dim", None) or hidden // config.num_attention_heads
        q, kv = config.num_attention_heads * head_dim, config.num_key_value_heads * head_dim
        per_layer = hidden * (q + 2 * kv) + q * hidden + hidden * 2 * inter + inter * hidden
        itemsize = torch.empty((), dtype=dtype).element_size()
        return cls(layers * per_layer, config.vocab_size * hidden, 2 * layers * kv * itemsize, itemsize)


@dataclass(frozen=True)
class MachineRates:
    gemm_flops: float  # per second, 1024 x hidden @ hidden x 4 hidden, prepacked
    read_bytes: float  # per second, one pass over 1 GiB

    @classmethod
    def measure(cls, hidden: int, dtype: torch.dtype) -> "MachineRates":
        x, weight = torch.randn(1024, hidden, dtype=dtype), torch.randn(4 * hidden, hidden, dtype=dtype)
        packed = prepack(weight)
        matmul = (lambda: packed_linear(x, packed, None)) if packed is not None else (lambda: x @ weight.T)
        gemm = _best_seconds(matmul)
        data = torch.ones(2**28)
        read = _best_seconds(data.sum)
        return cls(2 * x.shape[0] * weight.numel() / gemm, data.numel() * 4 / read)


def _best_seconds(fn, rounds: int = 5) -> float:
    fn()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def floor_seconds(costs: ModelCosts, rates: MachineRates, computed_prompt_tokens: int, generated_tokens: int,
                  documents: int, mean_context: float) -> float:
    prefill = computed_prompt_tokens * 2 * costs.linear_params / rates.gemm_flops
    weights = (costs.linear_params + costs.head_params) * costs.itemsize
    decode = (generated_tokens / documents * weights + generated_tokens * mean_context * costs.kv_bytes_per_token)
    return prefill + decode / rates.read_bytes
