"""Long-context QA tasks as token ids (RULER's NIAH tasks, RULER-HotpotQA, SQuAD), their chunking and their metrics.

    samples = make_samples("niah_single_2", tokenizer, num_tokens=8192, num_samples=4)
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import TYPE_CHECKING

from grumem.tasks import hard_niah, hotpotqa, niah, squad
from grumem.tasks.chunking import chunk_document, num_chunks
from grumem.tasks.common import EXIT_TIMINGS, Sample, exit_timing, sample_rng
from grumem.tasks.metrics import niah_recall, score, sub_em

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

__all__ = ["EXIT_TIMINGS", "TASKS", "Sample", "chunk_document", "exit_timing", "make_samples", "niah_recall",
           "num_chunks", "sample_stream", "score", "sub_em"]

TASKS = (*niah.NIAH_TASKS, *hard_niah.HARD_TASKS, "hotpotqa", "squad")


def make_samples(
    task: str, tokenizer: PreTrainedTokenizerBase, num_tokens: int, num_samples: int, seed: int = 0,
    split: str = "eval",
) -> list[Sample]:
    """num_samples samples of task; NIAH contexts hold exactly num_tokens tokens, QA contexts at most that many.
    The same arguments (and tokenizer) always give the same samples. The NIAH tasks' `split` ("eval" or "train")
    picks disjoint keys, values and haystack offsets (splits.py); the QA tasks have one pool."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; valid tasks: {', '.join(TASKS)}")
    if num_samples < 1:
        raise ValueError(f"{task}: num_samples must be at least 1, got {num_samples}")
    if num_tokens < 1:
        raise ValueError(f"{task}: num_tokens must be at least 1, got {num_tokens}")
    if task == "hotpotqa":
        return hotpotqa.make_samples(task, tokenizer, num_tokens, num_samples, seed)
    if task == "squad":
        return squad.make_samples(task, tokenizer, num_tokens, num_samples, seed)
    if task in hard_niah.HARD_TASKS:
        return hard_niah.make_hard_samples(task, tokenizer, num_tokens, num_samples, seed, split)
    return [niah.make_sample(task, tokenizer, num_tokens, i, sample_rng(task, seed, i), split)
            for i in range(num_samples)]


def sample_stream(
    task: str, tokenizer: PreTrainedTokenizerBase, num_tokens: int, seed: int = 0, block: int = 32
) -> Iterator[Sample]:
    """Endless samples for training: blocks of `block` samples of the train split with seeds seed, seed + 1, ...
    (new haystacks and needles each time; the QA tasks draw their questions from the same pools as evaluation)."""
    for k in itertools.count():
        yield from make_samples(task, tokenizer, num_tokens, block, seed + k, split="train")
