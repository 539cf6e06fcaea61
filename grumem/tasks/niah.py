"""RULER's eight needle-in-a-haystack tasks (synthetic.yaml): needles "One of the special magic {type} for {key} is:
{value}." hidden at sampled depths in an essay, repeat or distractor-needle haystack of exactly num_tokens tokens.
The evidence spans are the needles whose values answer the question; multikey distractors are not evidence."""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

from grumem.tasks.common import Sample, encode_batch, too_short
from grumem.tasks.data import read_words
from grumem.tasks.haystack import Haystack, essay_haystack, fill, insert_needles, repeat_haystack
from grumem.tasks.splits import essay_start, split_of

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

NEEDLE = "One of the special magic {type} for {key} is: {value}."
DEPTHS = [round(100 * i / 39) for i in range(40)]  # RULER: np.round(np.linspace(0, 100, 40)), in percent


@dataclass(frozen=True, slots=True)
class NiahSpec:
    haystack: str  # "essay" | "repeat" | "needle"
    key_type: str  # "words" | "numbers" | "uuids"
    value_type: str
    num_keys: int = 1  # needles with distinct keys; RULER's max(num_needle_k, num_needle_q)
    num_values: int = 1  # needles (values) per key
    num_queries: int = 1  # keys asked about


NIAH_TASKS = {
    "niah_single_1": NiahSpec("repeat", "words", "numbers"),
    "niah_single_2": NiahSpec("essay", "words", "numbers"),
    "niah_single_3": NiahSpec("essay", "words", "uuids"),
    "niah_multikey_1": NiahSpec("essay", "words", "numbers", num_keys=4),
    "niah_multikey_2": NiahSpec("needle", "words", "numbers"),
    "niah_multikey_3": NiahSpec("needle", "uuids", "uuids"),
    "niah_multivalue": NiahSpec("essay", "words", "numbers", num_values=4),
    "niah_multiquery": NiahSpec("essay", "words", "numbers", num_keys=4, num_queries=4),
}


def random_value(kind: str, rng: random.Random) -> str:
    if kind == "numbers":
        return str(rng.randint(10**6, 10**7 - 1))
    if kind == "uuids":
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))
    assert kind == "words", kind
    return f"{rng.choice(read_words('adjectivelist.txt'))}-{rng.choice(read_words('nounlist.txt'))}"


def distinct(kind: str, count: int, rng: random.Random, taken: set[str], split: str = "eval") -> list[str]:
    """`count` new values of `kind` from `split`'s pool, none in `taken` (which gains them)."""
    out: list[str] = []
    while len(out) < count:
        value = random_value(kind, rng)
        if value not in taken and split_of(value) == split:
            taken.add(value)
            out.append(value)
    return out


def question(spec: NiahSpec, keys: list[str]) -> str:
    query = keys[0] if len(keys) == 1 else ", ".join(keys[:-1]) + ", and " + keys[-1]
    if spec.num_queries * spec.num_values == 1:
        return f"What is the special magic {spec.value_type[:-1]} for {query} mentioned in the provided text?"
    return f"What are all the special magic {spec.value_type} for {query} mentioned in the provided text?"


def _needle_haystack(
    spec: NiahSpec, tokenizer: PreTrainedTokenizerBase, num_tokens: int, rng: random.Random, taken: set[str],
    split: str,
) -> Haystack:
    """RULER's "needle" haystack: distractor needles with fresh keys and values, encoded per sample."""
    texts: list[str] = []
    piece_ids: list[list[int]] = []
    total = 0
    while not piece_ids or total - len(piece_ids[0]) < num_tokens:  # enough without cycling back to piece 0
        count = 64 if not piece_ids else int((num_tokens - total) * len(piece_ids) / total * 1.05) + 64
        keys = distinct(spec.key_type, count, rng, taken, split)
        values = distinct(spec.value_type, count, rng, taken, split)
        texts += [NEEDLE.format(type=spec.value_type, key=k, value=v) for k, v in zip(keys, values)]
        piece_ids += encode_batch(tokenizer, ["\n" + text for text in texts[-count:]])
        total += sum(map(len, piece_ids[-count:]))
    return Haystack(encode_batch(tokenizer, texts[:1])[0], piece_ids)


def haystack_pieces(
    spec: NiahSpec, tokenizer: PreTrainedTokenizerBase, num_tokens: int, rng: random.Random, taken: set[str],
    split: str = "eval",
) -> list[list[int]]:
    if spec.haystack == "essay":
        essays = essay_haystack(tokenizer)
        return fill(essays, num_tokens, essay_start(split, len(essays.piece_ids), rng))
    if spec.haystack == "repeat":
        return fill(repeat_haystack(tokenizer), num_tokens)
    return fill(_needle_haystack(spec, tokenizer, num_tokens, rng, taken, split), num_tokens)


def needle_boundaries(spec: NiahSpec, rng: random.Random, num_pieces: int, num_needles: int) -> list[int]:
    """Where needles go, as piece counts in [1, num_pieces]: RULER's depths for essays, uniform otherwise."""
    if spec.haystack == "essay":
        depths = rng.sample(DEPTHS, num_needles)
        return sorted(max(1, num_pieces * d // 100) for d in depths)
    return sorted(rng.randint(1, num_pieces) for _ in range(num_needles))


def make_sample(
    task: str, tokenizer: PreTrainedTokenizerBase, num_tokens: int, index: int, rng: random.Random,
    split: str = "eval",
) -> Sample:
    spec = NIAH_TASKS[task]
    taken: set[str] = set()
    keys = distinct(spec.key_type, spec.num_keys, rng, taken, split)
    values = [distinct(spec.value_type, spec.num_values, rng, taken, split) for _ in keys]
    needles = [(k, value) for k in range(len(keys)) for value in values[k]]
    rng.shuffle(needles)
    queried = rng.sample(range(spec.num_keys), spec.num_queries)

    separator = " " if spec.haystack == "essay" else "\n"
    needle_ids = encode_batch(tokenizer, [
        separator + NEEDLE.format(type=spec.value_type, key=keys[k], value=value) for k, value in needles])
    num_needle_tokens = sum(map(len, needle_ids))
    if num_tokens <= num_needle_tokens:
        raise too_short(task, num_tokens, num_needle_tokens + 1,
                        f"its {len(needles)} needle(s) take {num_needle_tokens} tokens, plus 1 of haystack")
    pieces = haystack_pieces(spec, tokenizer, num_tokens - num_needle_tokens, rng, taken, split)

    context_ids, spans = insert_needles(pieces, needle_ids, needle_boundaries(spec, rng, len(pieces), len(needles)))
    evidence = sorted(span for span, (k, _) in zip(spans, needles) if k in queried)
    answers = [value for k in queried for value in values[k]]
    return Sample(task, index, context_ids, question(spec, [keys[k] for k in queried]), answers, evidence, "recall")
