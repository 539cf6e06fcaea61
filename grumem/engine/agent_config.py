"""Settings of the memory loop (mode, chunking, budgets, layout), with the paper's sizes as a preset."""
from dataclasses import dataclass, replace

MODES = ("grumem", "memagent")


@dataclass(slots=True)
class AgentConfig:
    mode: str = "grumem"  # "grumem" (gated) or "memagent" (no gates: the memory is every turn's whole response)
    exit_gate: bool = True  # grumem only: stop at <next>end</next> ("w EG"); False reads every chunk ("w/o EG")
    layout: str = "paper"  # "paper" (problem, memory, chunk) or "chunk_first" (problem, chunk, memory)
    chunk_tokens: int = 1024
    memory_tokens: int = 256  # memagent: max tokens of a memory turn; grumem: cap of the <update> content
    max_think_tokens: int = 32
    answer_tokens: int = 48
    constraint: str | None = "format"  # grumem decoding: "format", "gates" or None (parse leniently)
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        for name in ("chunk_tokens", "memory_tokens", "max_think_tokens", "answer_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    @property
    def uses_exit_gate(self) -> bool:
        return self.mode == "grumem" and self.exit_gate

    @property
    def memory_turn_tokens(self) -> int:
        """max_tokens of a memory turn: the memory itself for memagent; think + update + tags for grumem."""
        if self.mode == "memagent":
            return self.memory_tokens
        return self.max_think_tokens + self.memory_tokens + 64  # + the tags (about 30 tokens)


PAPER = AgentConfig(chunk_tokens=5000, memory_tokens=1024, max_think_tokens=1024, answer_tokens=1024)


def paper_preset(**overrides) -> AgentConfig:
    return replace(PAPER, **overrides)
