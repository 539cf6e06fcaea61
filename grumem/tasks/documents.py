"""RULER's QA samples (HotpotQA, SQuAD): gold documents among distractors, each "Document {i}:\\n{body}", separated
by a blank line, shuffled, as many distractors as fit num_tokens. Bodies and headers are encoded once per tokenizer,
in batches, when a budget first needs them. The evidence spans are the gold bodies."""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING
from weakref import WeakKeyDictionary, ref

from grumem.tasks.common import Sample, encode_batch, sample_rng, too_short

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

BATCH = 256  # distractors encoded per tokenizer call


@dataclass(frozen=True, slots=True)
class QAItem:
    question: str
    answers: list[str]
    gold: list[int]  # indices into QADataset.docs
    related: list[int]  # distractors placed before random ones (SQuAD: the other paragraphs of the same article)
    excluded: frozenset[int]  # never drawn at random: gold, related, and for HotpotQA the item's own context


@dataclass(frozen=True, slots=True)
class QADataset:
    docs: list[str]  # document bodies, unique, sorted
    items: list[QAItem]


class TokenCache:
    """Token ids of text_of(i), encoded on first request, many indices per tokenizer call."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, text_of: Callable[[int], str]):
        self.tokenizer = ref(tokenizer)  # weak: the cache lives in a WeakKeyDictionary keyed by this tokenizer
        self.text_of = text_of
        self.ids: dict[int, list[int]] = {}

    def get(self, indices: Iterable[int]) -> list[list[int]]:
        indices = list(indices)
        missing = [i for i in dict.fromkeys(indices) if i not in self.ids]
        self.ids.update(zip(missing, encode_batch(self.tokenizer(), [self.text_of(i) for i in missing])))
        return [self.ids[i] for i in indices]


def header_text(position: int) -> str:
    """Positions count from 1; every document but the first opens with the blank line that separates it."""
    return f"Document {position}:\n" if position == 1 else f"\n\nDocument {position}:\n"


def lazy_permutation(rng: random.Random, n: int) -> Iterator[int]:
    """range(n) in random order, lazily: a Fisher-Yates shuffle whose swaps live in a dict, O(1) per item."""
    swapped: dict[int, int] = {}
    for i in range(n):
        j = rng.randrange(i, n)
        yield swapped.get(j, j)
        swapped[j] = swapped.get(i, i)


def gold_tokens(gold: list[int], bodies: TokenCache, headers: TokenCache) -> int:
    return sum(map(len, bodies.get(gold))) + sum(map(len, headers.get(range(1, len(gold) + 1))))


def select_documents(
    gold: list[int], candidates: Iterator[int], bodies: TokenCache, headers: TokenCache, num_tokens: int
) -> list[int]:
    """Gold documents, then candidates in order until the next one would overflow num_tokens."""
    chosen = list(gold)
    total = gold_tokens(gold, bodies, headers)
    assert total <= num_tokens
    while block := [i for _, i in zip(range(BATCH), candidates)]:
        header_ids = headers.get(range(len(chosen) + 1, len(chosen) + len(block) + 1))
        for doc, body_ids, head_ids in zip(block, bodies.get(block), header_ids):
            if total + len(body_ids) + len(head_ids) > num_tokens:
                return chosen
            chosen.append(doc)
            total += len(body_ids) + len(head_ids)
    return chosen


def assemble(
    docs: Sequence[int], gold: set[int], bodies: TokenCache, headers: TokenCache
) -> tuple[list[int], list[tuple[int, int]]]:
    """Concatenates header + body in the given order; returns the ids and the spans of the gold bodies."""
    context_ids: list[int] = []
    spans = []
    for doc, body_ids, head_ids in zip(docs, bodies.get(docs), headers.get(range(1, len(docs) + 1))):
        context_ids.extend(head_ids)
        if doc in gold:
            spans.append((len(context_ids), len(context_ids) + len(body_ids)))
        context_ids.extend(body_ids)
    return context_ids, spans


_CACHES: WeakKeyDictionary = WeakKeyDictionary()  # tokenizer -> {task: bodies, "headers": headers}


def _caches(tokenizer: PreTrainedTokenizerBase, task: str, dataset: QADataset) -> tuple[TokenCache, TokenCache]:
    caches = _CACHES.setdefault(tokenizer, {"headers": TokenCache(tokenizer, header_text)})
    if task not in caches:
        caches[task] = TokenCache(tokenizer, dataset.docs.__getitem__)
    return caches[task], caches["headers"]


def _candidates(item: QAItem, num_docs: int, rng: random.Random) -> Iterator[int]:
    related = rng.sample(item.related, len(item.related))
    others = (d for d in lazy_permutation(rng, num_docs) if d not in item.excluded)
    return itertools.chain(related, others)


def make_qa_samples(
    task: str, dataset: QADataset, tokenizer: PreTrainedTokenizerBase, num_tokens: int, num_samples: int, seed: int
) -> list[Sample]:
    if num_samples > len(dataset.items):
        raise ValueError(f"{task}: num_samples={num_samples} exceeds the {len(dataset.items)} questions available")
    bodies, headers = _caches(tokenizer, task, dataset)
    questions = lazy_permutation(random.Random(f"{task}/{seed}"), len(dataset.items))
    samples = []
    for index, item in enumerate(dataset.items[q] for q in itertools.islice(questions, num_samples)):
        if (needed := gold_tokens(item.gold, bodies, headers)) > num_tokens:
            raise too_short(task, num_tokens, needed, f"the gold document(s) of sample {index} take {needed} tokens")
        rng = sample_rng(task, seed, index)
        docs = select_documents(item.gold, _candidates(item, len(dataset.docs), rng), bodies, headers, num_tokens)
        rng.shuffle(docs)
        context_ids, spans = assemble(docs, set(item.gold), bodies, headers)
        samples.append(Sample(task, index, context_ids, item.question, item.answers, spans, "sub_em"))
    return samples
