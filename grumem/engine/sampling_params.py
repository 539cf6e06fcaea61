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
        self.stop_token_ids = tuple(self.stop_token_ids)
