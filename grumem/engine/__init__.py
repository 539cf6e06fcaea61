"""Serving: token-id requests in, token ids + logprobs + roles out, over a paged KV cache with prefix caching.
It knows nothing of the memory loop: per-request logits work comes in through LogitsProcessor."""
from grumem.engine.llm import LLM
from grumem.engine.logits_processor import LogitsProcessor
from grumem.engine.outputs import CompletionOutput, EngineStats, RequestOutput
from grumem.engine.sampling_params import SamplingParams
from grumem.engine.sequence import TokenRole

__all__ = ["LLM", "LogitsProcessor", "SamplingParams", "RequestOutput", "CompletionOutput", "EngineStats", "TokenRole"]
