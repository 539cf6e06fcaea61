"""Settings of the memory loop (mode, chunking, budgets, layout, gate prior), with the paper's sizes as a preset."""
from dataclasses import dataclass, replace

from grumem.agent.turn_format import FORMAT_MODES, FormatArgs

MODES = ("grumem", "memagent")
THINKS = ("free", "quote")


@dataclass(slots=True)
class AgentConfig:
    mode: str = "grumem"  # "grumem" (gated) or "memagent" (no gates: the memory is every turn's whole response)
    exit_gate: bool = True  # grumem only: stop at <next>end</next> ("w EG"); False reads every chunk ("w/o EG")
    # "paper" (problem, memory, section) or "chunk_first" (section, problem, memory); None: chunk_first for grumem
    # (the gate prior needs the question after the section), paper for memagent (MemAgent's published order)
    layout: str | None = None
    chunk_tokens: int = 1024
    memory_tokens: int = 256  # memagent: max tokens of a memory turn; grumem: cap of the <update> content
    max_think_tokens: int = 32
    max_think_lines: int | None = 1  # grumem: end <think> after its first line (a quote); None: only the token cap
    answer_tokens: int = 48
    constraint: str | None = "format"  # grumem decoding: "format", "gates" or None (parse leniently)
    think: str = "free"  # grumem: "quote" makes <think> copy one sentence of the section (agent/quote.py)
    # the gate prior's threshold in nats, for models whose gates are not trained (agent/gate_prior.py says what it
    # is); None: the model's gates alone
    gate_prior_threshold: float | None = 10.0
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None  # document i of a run draws from its own stream, mixed from (seed, i); None: the engine's

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.layout is None:
            self.layout = "chunk_first" if self.mode == "grumem" else "paper"
        for name in ("chunk_tokens", "memory_tokens", "max_think_tokens", "answer_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_think_lines is not None and self.max_think_lines < 1:
            raise ValueError(f"max_think_lines must be >= 1 or None, got {self.max_think_lines}")
        if self.constraint not in (None, *FORMAT_MODES):
            raise ValueError(f"constraint must be one of {FORMAT_MODES} or None, got {self.constraint!r}")
        if self.think not in THINKS:
            raise ValueError(f"think must be one of {THINKS}, got {self.think!r}")
        if self.think == "quote" and self.mode == "grumem" and self.constraint != "format":
            raise ValueError("quoted thoughts are decoded under the turn format: they need constraint 'format'")
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ValueError(f"need temperature >= 0 and 0 < top_p <= 1, got {self.temperature}, {self.top_p}")

    @property
    def uses_exit_gate(self) -> bool:
        return self.mode == "grumem" and self.exit_gate

    @property
    def uses_gate_prior(self) -> bool:
        """The prior needs the question after the section (chunk_first) and gate choices to bias (a constraint)."""
        return (self.mode == "grumem" and self.gate_prior_threshold is not None and self.layout == "chunk_first"
                and self.constraint is not None)

    @property
    def memory_format(self) -> FormatArgs | None:
        """The turn format a memory turn is decoded under (without the gate prior); the trainer replays its masks.
        None: unconstrained (memagent, or constraint None)."""
        if self.mode != "grumem" or self.constraint is None:
            return None
        return FormatArgs(self.constraint, self.max_think_tokens, self.memory_tokens, self.max_think_lines)

    def section_format(self, section: list[int]) -> FormatArgs | None:
        """The turn format of the memory turn that reads `section`: memory_format, quoting it when think is quote."""
        args = self.memory_format
        return replace(args, quote=tuple(section)) if args is not None and self.think == "quote" else args

    @property
    def memory_turn_tokens(self) -> int:
        """max_tokens of a memory turn: the memory itself for memagent; think + update + tags for grumem."""
        if self.mode == "memagent":
            return self.memory_tokens
        return self.max_think_tokens + self.memory_tokens + 64  # + the tags (about 30 tokens)


PAPER = dict(chunk_tokens=5000, memory_tokens=1024, max_think_tokens=1024, max_think_lines=None, answer_tokens=1024)


def paper_preset(**overrides) -> AgentConfig:
    """The paper's sizes; its layout and no gate prior unless overridden (its gates are trained)."""
    return AgentConfig(**{"layout": "paper", "gate_prior_threshold": None, **PAPER, **overrides})
