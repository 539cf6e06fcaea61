"""Sample: one long-context question whose document is token ids (the canonical form: nothing re-tokenises it), or a
file tokenised as it is read (text_file.py), with the token spans that hold its evidence, so rewards and gate
metrics know which chunks matter."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from grumem.tasks.chunking import chunk_document, span_chunks

if TYPE_CHECKING:
    from collections.abc import Iterator

    from transformers import PreTrainedTokenizerBase

    from grumem.tasks.text_file import TextFile


@dataclass(slots=True)
class Sample:
    task: str
    index: int
    context_ids: list[int]
    question: str
    answers: list[str]
    evidence_spans: list[tuple[int, int]]  # half-open [start, end) offsets into context_ids, one per evidence piece
    metric: str  # "sub_em" or "recall"
    distractor_spans: list[tuple[int, int]] = field(default_factory=list)  # passages made to look like evidence
    document: TextFile | None = None  # a file tokenised as it is read (context_ids then stays empty)

    @property
    def num_tokens(self) -> int:
        return len(self.context_ids)

    def chunks(self, tokenizer: PreTrainedTokenizerBase, chunk_tokens: int) -> Iterator[list[int]]:
        """The document's chunks in reading order; a file's are tokenised as they are reached."""
        if self.document is not None:
            return self.document.chunks(tokenizer, chunk_tokens)
        return iter(chunk_document(self.context_ids, chunk_tokens))

    def evidence_chunks(self, chunk_tokens: int) -> list[int]:
        """The chunks holding evidence, in reading order; the last is where an exit is exact."""
        return _chunks_of(self.evidence_spans, chunk_tokens)

    def distractor_chunks(self, chunk_tokens: int) -> list[int]:
        """The chunks holding a distractor and no evidence: where a yes is a false yes the prior is prone to."""
        evidence = set(self.evidence_chunks(chunk_tokens))
        return [k for k in _chunks_of(self.distractor_spans, chunk_tokens) if k not in evidence]


def _chunks_of(spans: list[tuple[int, int]], chunk_tokens: int) -> list[int]:
    return sorted({k for start, end in spans for k in span_chunks(start, end, chunk_tokens)})


EXIT_TIMINGS = ("early", "exact", "late")


def exit_timing(stop_chunk: int, evidence_chunks: list[int]) -> str | None:
    """When reading stopped against the chunk holding the last evidence; None for a sample without evidence."""
    if not evidence_chunks:
        return None
    last = evidence_chunks[-1]
    return "early" if stop_chunk < last else "exact" if stop_chunk == last else "late"


def sample_rng(task: str, seed: int, index: int) -> random.Random:
    """Each sample draws from its own stream, so sample i does not depend on num_samples (str seeds are stable)."""
    return random.Random(f"{task}/{seed}/{index}")


def encode_batch(tokenizer: PreTrainedTokenizerBase, texts: list[str]) -> list[list[int]]:
    if not texts:
        return []
    return list(tokenizer(texts, add_special_tokens=False)["input_ids"])


def too_short(task: str, num_tokens: int, minimum: int, reason: str) -> ValueError:
    return ValueError(f"{task}: num_tokens={num_tokens} is too small, at least {minimum} are needed ({reason})")
