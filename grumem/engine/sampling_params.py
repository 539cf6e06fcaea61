"""Per-request sampling settings."""
from dataclasses import dataclass, field
from typing import Any

MAX_TOP_LOGPROBS = 20


@dataclass(slots=True)
class SamplingParams:
    temperature: float = 1.0  # 0 = greedy
    top_p: float = 1.0
    max_tokens: int = 256
    seed: int | None = None  # per-request generator: the same seed gives the same tokens whatever the batch
    n: int = 1  # samples per prompt: the prompt is prefilled once and forked into n sequences
    stop_token_ids: tuple[int, ...] = ()
    ignore_eos: bool = False
    prompt_logprobs: tuple[int, int] | None = None  # (start, end): return the logprobs of these prompt tokens
    logprobs: int | None = None  # k: report the k likeliest tokens at each output position (CompletionOutput)
    # {registered processor name: its args}: per-request logits work, see engine/logits_processor.py
    logits_processors: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")
        if self.logprobs is not None and not 0 <= self.logprobs <= MAX_TOP_LOGPROBS:
            raise ValueError(f"logprobs must be in [0, {MAX_TOP_LOGPROBS}], got {self.logprobs}")
        if self.prompt_logprobs is not None:
            start, end = self.prompt_logprobs
            if not 1 <= start < end:
                raise ValueError(f"prompt_logprobs must be (start, end), 1 <= start < end; got {self.prompt_logprobs}")
            self.prompt_logprobs = (start, end)
        self.stop_token_ids = tuple(self.stop_token_ids)
