"""Serving: token-id requests in, token ids + logprobs + roles out, over a paged KV cache with prefix caching."""
from grumem.engine.agent_config import AgentConfig, paper_preset
from grumem.engine.agent_loop import MemoryAgent
from grumem.engine.llm import LLM
from grumem.engine.outputs import CompletionOutput, EngineStats, RequestOutput
from grumem.engine.sampling_params import SamplingParams
from grumem.engine.sequence import TokenRole

__all__ = ["LLM", "MemoryAgent", "AgentConfig", "paper_preset", "SamplingParams", "RequestOutput", "CompletionOutput", "EngineStats", "TokenRole"]
