"""What the engine returns per request: exact token ids, logprobs and roles, plus run statistics."""
from dataclasses import dataclass, field
from typing import Any


@dataclass
class CompletionOutput:
    index: int
    token_ids: list[int]
    logprobs: list[float]  # of each output token under the distribution it was sampled from
    roles: list[int]  # TokenRole per output token: SAMPLED, CHOICE or FORCED
    finish_reason: str  # "stop" (eos, a stop token, or a logits processor ended it), "length", "abort" or "error"
    extra: dict[str, Any] = field(default_factory=dict)  # logits processor name -> what it reports (its `output`)
    # with SamplingParams.logprobs = k: per output token {token id: logprob} of the k likeliest tokens and the one
    # chosen, under the model's distribution after the logits processors, at temperature 1 (-inf floored)
    top_logprobs: list[dict[int, float]] | None = None


@dataclass
class RequestTimes:
    """time.perf_counter() readings: when the request was added, produced its first token, and finished."""

    arrival: float
    first_token: float | None = None
    finished: float | None = None


@dataclass
class RequestOutput:
    request_id: str
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]
    num_cached_tokens: int = 0  # prompt tokens served by the prefix cache
    error: str | None = None  # set when the request was rejected or failed; the others are unaffected
    prompt_logprobs: list[float] | None = None  # of the span asked for in SamplingParams.prompt_logprobs
    times: RequestTimes | None = None


@dataclass
class EngineStats:
    num_prefill_tokens: int = 0  # tokens computed in prefill steps
    num_cached_tokens: int = 0  # prompt tokens served by the prefix cache
    num_queried_tokens: int = 0  # prompt tokens looked up in the prefix cache (hit rate: cached / queried)
    num_decode_tokens: int = 0  # tokens computed in decode steps
    num_generated_tokens: int = 0  # tokens sampled (decode steps and each prompt's first token)
    num_prefill_steps: int = 0
    num_decode_steps: int = 0
    num_preemptions: int = 0
    prefill_seconds: float = 0.0
    decode_seconds: float = 0.0


@dataclass
class EngineLoad:
    """What the engine holds now."""

    num_running: int  # sequences in the decode batch
    num_waiting: int  # sequences queued for prefill (new, preempted or partly prefilled)
    num_blocks_used: int  # KV blocks held by sequences or pinned prefixes
    num_blocks: int
