"""Needle tasks the gate prior gets wrong, and the mix the gates are trained on.

- niah_paraphrase: the needle and the question are worded unlike RULER's and unlike each other (only the key is
  shared), so a section's likelihood of the question says little about whether it holds the answer.
- niah_distractor: three more needles whose keys share a word with the asked key, in RULER's wording: they match
  the question nearly as well as the evidence does (their spans are the sample's distractor_spans).
- niah_two_needles: two values of one key in different halves of the document; reading may stop only after both,
  so the exit decision is not a copy of the update decision.
The training split draws every key, value, wording and haystack offset from pools the eval split never uses
(splits.py, and the wordings below).
"""
from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from grumem.tasks.common import Sample, encode_batch, sample_rng, too_short
from grumem.tasks.data import read_words
from grumem.tasks.haystack import insert_needles
from grumem.tasks.niah import NEEDLE, NiahSpec, distinct, haystack_pieces, question
from grumem.tasks.splits import check_split, split_of

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

# (needle, question) wordings per split; a question never reuses its needle's words beyond the key
WORDINGS = {
    "train": {
        "needles": ["The secret code assigned to {key} is {value}.", "Remember that {key} goes with {value}.",
                    "For {key}, the reference entry reads {value}.", "{key} was given the tag {value}."],
        "questions": ["Which code belongs to {key}?", "What was recorded for {key} in the text?",
                      "Tell me what {key} is paired with."],
    },
    "eval": {
        "needles": ["Note: the access key of {key} equals {value}.", "The value {value} is linked to {key}.",
                    "Everyone knows {key} by the identifier {value}."],
        "questions": ["According to the document, what is associated with {key}?",
                      "What does the passage say {key} corresponds to?"],
    },
}


@dataclass(frozen=True, slots=True)
class GateDocSpec:
    haystack: str  # "essay" or "repeat"
    value_type: str  # "numbers" or "uuids"
    paraphrased: bool = False
    num_distractors: int = 0
    num_values: int = 1

    @property
    def niah(self) -> NiahSpec:
        return NiahSpec(self.haystack, "words", self.value_type, num_values=self.num_values)


HARD_TASKS = {
    "niah_paraphrase": GateDocSpec("essay", "numbers", paraphrased=True),
    "niah_distractor": GateDocSpec("essay", "numbers", num_distractors=3),
    "niah_two_needles": GateDocSpec("essay", "numbers", num_values=2),
}
# what the gates train on: the plain RULER needles of NIAH single 1/2/3 and the three hard kinds, mixed
TRAINING_MIX = [
    GateDocSpec("repeat", "numbers"), GateDocSpec("essay", "numbers"), GateDocSpec("essay", "uuids"),
    GateDocSpec("essay", "numbers", paraphrased=True), GateDocSpec("essay", "uuids", paraphrased=True),
    GateDocSpec("essay", "numbers", num_distractors=3), GateDocSpec("repeat", "numbers", num_distractors=3),
    GateDocSpec("essay", "numbers", num_values=2), GateDocSpec("essay", "numbers", paraphrased=True, num_values=2),
]


def _keys(count: int, rng: random.Random, taken: set[str], split: str) -> list[str]:
    """The asked key (an adjective and a noun, as RULER's) and `count` keys sharing its adjective or its noun (and
    so the question's words)."""
    adjectives, nouns = read_words("adjectivelist.txt"), read_words("nounlist.txt")
    keys, parts = [], None
    while len(keys) < count + 1:
        if parts is None:
            adjective, noun = rng.choice(adjectives), rng.choice(nouns)
        else:
            adjective, noun = (parts[0], rng.choice(nouns)) if len(keys) % 2 else (rng.choice(adjectives), parts[1])
        key = f"{adjective}-{noun}"
        if key not in taken and split_of(key) == split:
            taken.add(key)
            keys.append(key)
            parts = parts or (adjective, noun)
    return keys


def _stretches(pieces: list[list[int]], num_needles: int, rng: random.Random) -> list[int]:
    """Needle n goes into the n-th of num_needles equal stretches of the haystack's tokens (as piece counts)."""
    offsets = list(itertools.accumulate(map(len, pieces)))  # tokens before the boundary after piece b
    stretch = offsets[-1] / num_needles
    return [rng.choice([b + 1 for b, offset in enumerate(offsets) if n * stretch <= offset < (n + 1) * stretch]
                       or [int((n + 1) * len(pieces) / num_needles)]) for n in range(num_needles)]


def make_sample(spec: GateDocSpec, task: str, tokenizer: PreTrainedTokenizerBase, num_tokens: int, index: int,
                rng: random.Random, split: str = "eval") -> Sample:
    check_split(split)
    taken: set[str] = set()
    key, *distractor_keys = _keys(spec.num_distractors, rng, taken, split)
    values = distinct(spec.value_type, spec.num_values, rng, taken, split)
    wordings = WORDINGS[split]
    template = rng.choice(wordings["needles"]) if spec.paraphrased else NEEDLE
    distractor_values = distinct(spec.value_type, spec.num_distractors, rng, taken, split)
    texts = [template.format(type=spec.value_type, key=key, value=v) for v in values]
    texts += [template.format(type=spec.value_type, key=k, value=v) for k, v in zip(distractor_keys, distractor_values)]
    if spec.paraphrased:
        asked = rng.choice(wordings["questions"]).format(key=key)
        asked += "" if spec.num_values == 1 else f" The text gives {spec.num_values} of them."
    else:
        asked = question(spec.niah, [key])

    separator = " " if spec.haystack == "essay" else "\n"
    needle_ids = encode_batch(tokenizer, [separator + text for text in texts])
    num_needle_tokens = sum(map(len, needle_ids))
    if num_tokens <= 2 * num_needle_tokens:
        raise too_short(task, num_tokens, 2 * num_needle_tokens + 1,
                        f"its {len(texts)} needles take {num_needle_tokens} tokens, and as many of haystack")
    pieces = haystack_pieces(spec.niah, tokenizer, num_tokens - num_needle_tokens, rng, taken, split)
    evidence_at = _stretches(pieces, spec.num_values, rng)
    distractor_at = [rng.randint(1, len(pieces)) for _ in distractor_keys]
    context_ids, spans = insert_needles(pieces, needle_ids, evidence_at + distractor_at)
    return Sample(task, index, context_ids, asked, values, sorted(spans[: spec.num_values]), "recall",
                  distractor_spans=sorted(spans[spec.num_values:]))


def make_hard_samples(task: str, tokenizer: PreTrainedTokenizerBase, num_tokens: int, num_samples: int,
                      seed: int = 0, split: str = "eval") -> list[Sample]:
    return [make_sample(HARD_TASKS[task], task, tokenizer, num_tokens, i, sample_rng(task, seed, i), split)
            for i in range(num_samples)]


def training_stream(tokenizer: PreTrainedTokenizerBase, num_tokens: int, seed: int) -> Iterator[Sample]:
    """Endless training documents from the train split, cycling through TRAINING_MIX."""
    for i in itertools.count():
        spec = TRAINING_MIX[i % len(TRAINING_MIX)]
        yield make_sample(spec, "gate_training", tokenizer, num_tokens, i, sample_rng("gate_training", seed, i),
                          "train")
