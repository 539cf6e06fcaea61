"""What the memory loop records: every turn with its exact ids (the rollout contract of the trainer), and results."""
from dataclasses import dataclass, field

from grumem.agent.turn_format import FormatArgs
from grumem.tasks import exit_timing


@dataclass
class TurnRecord:
    kind: str  # "memory" or "answer"
    chunk_index: int  # the chunk read (memory turns); -1 for the answer turn
    prompt_ids: list[int]
    output_ids: list[int]
    logprobs: list[float]
    roles: list[int]  # TokenRole per output token; FORCED tokens carry no gradient
    finish_reason: str
    format_args: FormatArgs | None = None  # the turn format it was decoded under (memory turns); None: unconstrained
    check: str | None = None  # update gate as written ("yes"/"no"), None when missing
    next: str | None = None  # exit gate as written ("continue"/"end")
    well_formed: bool = True
    has_evidence: bool | None = None  # whether the chunk holds evidence, when the sample is labelled
    has_distractor: bool = False  # whether it holds a distractor (and no evidence)
    gate_prior: float | None = None  # the evidence log-likelihood ratio minus its threshold, added to the gate logits
    memory_ids: list[int] = field(default_factory=list)  # the memory after this turn
    num_cached_tokens: int = 0  # prompt tokens served by the prefix cache
    seconds: float = 0.0  # wall time from enqueue to finish

    @property
    def memory_tokens(self) -> int:
        return len(self.memory_ids)


@dataclass
class Trajectory:
    """One reading of one document: the memory turns, the answer turn and the outcome."""

    sample_index: int
    group_index: int = 0  # which of the G rollouts of its sample
    turns: list[TurnRecord] = field(default_factory=list)
    num_chunks: int | None = 0  # None: a file the exit gate left before its end (its length is not known)
    evidence_chunks: list[int] = field(default_factory=list)
    distractor_chunks: list[int] = field(default_factory=list)
    answer: str = ""
    boxed: bool = False  # the answer came inside \boxed{}
    score: float | None = None  # task metric against the gold answers, None when there are none
    stop_chunk: int = -1  # last chunk read
    seconds: float = 0.0
    error: str | None = None
    aborted: bool = False  # stopped unfinished because the run was interrupted (error says why); not an outcome

    @property
    def memory_turns(self) -> list[TurnRecord]:
        return [t for t in self.turns if t.kind == "memory"]

    @property
    def format_ok(self) -> bool:
        return all(t.well_formed for t in self.memory_turns)

    @property
    def exit_timing(self) -> str | None:
        """"early", "exact" or "late" against the last evidence chunk; None without evidence labels or on error."""
        return None if self.error is not None else exit_timing(self.stop_chunk, self.evidence_chunks)
