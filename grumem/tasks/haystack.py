"""NIAH haystacks as token ids: the Paul Graham essays (RULER's "essay") and a repeated filler paragraph ("repeat"),
encoded once per tokenizer; fill cuts one to an exact length and insert_needles puts needles between its pieces.
Each piece starts with its separator, so the ids of consecutive pieces equal those of the joined text."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING
from weakref import WeakKeyDictionary

from grumem.tasks.common import encode_batch
from grumem.tasks.data import read_ruler_json

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

REPEAT_TEXT = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
_SENTENCE_END = re.compile(r"(?<=[.!?])(?= )")


@dataclass(slots=True)
class Haystack:
    head_ids: list[int]  # piece 0 without its leading separator: a context opens with it
    piece_ids: list[list[int]]  # piece k with its leading separator; cycled, piece 0 only from the second round


_ESSAYS: WeakKeyDictionary = WeakKeyDictionary()
_REPEATS: WeakKeyDictionary = WeakKeyDictionary()


def essay_sentences() -> list[str]:
    """The essays with whitespace collapsed as RULER does, split after . ! ? (each piece keeps its leading space)."""
    text = re.sub(r"\s+", " ", read_ruler_json("PaulGrahamEssays.json")["text"]).strip()
    return _SENTENCE_END.split(text)


def essay_haystack(tokenizer: PreTrainedTokenizerBase) -> Haystack:
    if tokenizer not in _ESSAYS:
        sentences = essay_sentences()
        ids = encode_batch(tokenizer, [sentences[0]] + [" " + s.lstrip() for s in sentences])
        _ESSAYS[tokenizer] = Haystack(ids[0], ids[1:])
    return _ESSAYS[tokenizer]


def repeat_haystack(tokenizer: PreTrainedTokenizerBase) -> Haystack:
    if tokenizer not in _REPEATS:
        head_ids, piece_ids = encode_batch(tokenizer, [REPEAT_TEXT, "\n" + REPEAT_TEXT])
        _REPEATS[tokenizer] = Haystack(head_ids, [piece_ids])
    return _REPEATS[tokenizer]


def fill(haystack: Haystack, num_tokens: int, start: int = 0) -> list[list[int]]:
    """The head (or piece `start`), then the pieces after it (cycled), the last one cut so that the pieces hold
    exactly num_tokens ids."""
    assert num_tokens > 0 and haystack.piece_ids
    cycle = len(haystack.piece_ids)
    pieces = [haystack.head_ids if start == 0 else haystack.piece_ids[start % cycle]]
    total = len(pieces[0])
    while total < num_tokens:
        pieces.append(haystack.piece_ids[(start + len(pieces)) % cycle])
        total += len(pieces[-1])
    pieces[-1] = pieces[-1][: len(pieces[-1]) - (total - num_tokens)]
    return pieces


def insert_needles(
    pieces: list[list[int]], needle_ids: list[list[int]], boundaries: list[int]
) -> tuple[list[int], list[tuple[int, int]]]:
    """Concatenates pieces with needle n placed after pieces[:boundaries[n]]; returns ids and each needle's span."""
    context_ids: list[int] = []
    spans: list[tuple[int, int]] = [(0, 0)] * len(needle_ids)
    done = 0
    for boundary, n in sorted(zip(boundaries, range(len(needle_ids)))):
        for piece in pieces[done:boundary]:
            context_ids.extend(piece)
        done = boundary
        spans[n] = (len(context_ids), len(context_ids) + len(needle_ids[n]))
        context_ids.extend(needle_ids[n])
    for piece in pieces[done:]:
        context_ids.extend(piece)
    return context_ids, spans
