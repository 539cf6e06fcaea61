"""Per-request sampling settings."""
from dataclasses import dataclass

CONSTRAINTS = (None, "gates", "format")


@dataclass(slots=True)
class SamplingParams:
    temperature: float = 1.0  # 0 = greedy
    top_p: float = 1.0
    max_tokens: int = 256
    seed: int | None = None  # per-request generator: the same seed gives the same tokens whatever the batch
    n: int = 1  # samples per prompt: the prompt is prefilled once and forked into n sequences
    stop_token_ids: tuple[int, ...] = ()
    ignore_eos: bool = False
    constraint: str | None = None  # None, "gates" (only the gate values) or "format" (the whole GRU-Mem format)
    max_think_tokens: int | None = None  # force </think> after this many thinking tokens
    max_memory_tokens: int | None = None  # force </update> after this many memory tokens
    max_think_lines: int | None = None  # force </think> once this many lines of thinking are written
    prompt_logprobs: tuple[int, int] | None = None  # (start, end): return the logprobs of these prompt tokens
    # NOTE: the gate prior. With prompt_logprobs on the question, their sum minus this offset is a log-likelihood
    # ratio of "the text before holds evidence"; it is added to the logits of <check>yes and <next>end.
    evidence_offset: float | None = None

    def __post_init__(self):
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")
        if self.constraint not in CONSTRAINTS:
            raise ValueError(f"constraint must be one of {CONSTRAINTS}, got {self.constraint!r}")
        for name in ("max_think_tokens", "max_memory_tokens"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1 or None, got {getattr(self, name)}")
        if self.max_think_lines is not None and self.max_think_lines < 1:
            raise ValueError(f"max_think_lines must be >= 1 or None, got {self.max_think_lines}")
        if self.prompt_logprobs is not None:
            start, end = self.prompt_logprobs
            if not 1 <= start < end:
                raise ValueError(f"prompt_logprobs must be (start, end), 1 <= start < end; got {self.prompt_logprobs}")
            self.prompt_logprobs = (start, end)
        if self.evidence_offset is not None and (self.prompt_logprobs is None or self.constraint is None):
            raise ValueError("evidence_offset needs prompt_logprobs (the question's span) and a constraint")
        self.stop_token_ids = tuple(self.stop_token_ids)
