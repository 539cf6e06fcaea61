"""A hostile `grumem ask --batch` file: the inputs a document store really holds, mixed with good lines, to check that
every line gets exactly one record and nothing crashes, hangs or leaks (tests and benchmarks/bench_hostile.py).

    write_hostile_batch(folder, num_lines=1000, seed=0) -> path of the JSONL file (and the files it points to)
"""
import json
import os
import random

WORDS = "the vault code river north lamp seven quiet harbor violet engine paper".split()
KINDS = ("good", "empty", "whitespace", "binary_file", "missing_file", "huge", "long_question", "control_chars",
         "rtl_emoji", "duplicate", "not_json", "not_object", "wrong_types", "both_sources")


def _text(rng: random.Random, num_words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(num_words))


def _good(rng: random.Random, i: int, num_words: int) -> dict:
    code = rng.randrange(10**6, 10**7)
    words = _text(rng, num_words).split()
    words.insert(rng.randrange(len(words) + 1), f"The special code of item {i} is {code}.")
    return {"context": " ".join(words), "question": f"What is the special code of item {i}?", "answers": [str(code)]}


def hostile_line(kind: str, rng: random.Random, i: int, folder: str, huge_words: int) -> str:
    """One batch line of the given kind (a JSON line, or deliberately not one)."""
    if kind == "good":
        return json.dumps(_good(rng, i, rng.randrange(50, 400)))
    if kind == "empty":
        return json.dumps({"context": "", "question": "Anything?"})
    if kind == "whitespace":
        return json.dumps({"context": " \n\t \u00a0 \n", "question": "Anything?"})
    if kind == "binary_file":
        path = os.path.join(folder, f"binary-{i}.bin")
        with open(path, "wb") as f:
            f.write(bytes(rng.randrange(256) for _ in range(512)))
        return json.dumps({"document": path, "question": "What is in it?"})
    if kind == "missing_file":
        return json.dumps({"document": os.path.join(folder, f"missing-{i}.txt"), "question": "Where?"})
    if kind == "huge":
        return json.dumps(_good(rng, i, huge_words))
    if kind == "long_question":
        return json.dumps({"context": _text(rng, 100), "question": "why " * 2000 + "?"})
    if kind == "control_chars":
        line = _good(rng, i, 80)
        line["context"] = "\x00\x07\x1b[31m" + line["context"].replace(" ", "\x0b ", 5) + "\x7f"
        return json.dumps(line)
    if kind == "rtl_emoji":
        line = _good(rng, i, 60)
        line["context"] = "\u202eשלום עולם مرحبا \U0001F600\U0001F9E0 " + line["context"] + " \u200f\U0001F680"
        return json.dumps(line)
    if kind == "not_json":
        return '{"context": "unterminated'
    if kind == "not_object":
        return "[1, 2, 3]"
    if kind == "wrong_types":
        return json.dumps({"context": 12345, "question": ["not", "text"], "answers": 7})
    if kind == "both_sources":
        return json.dumps({"context": "text", "document": "file.txt", "question": "Which?"})
    raise ValueError(f"unknown kind {kind!r}")


def write_hostile_batch(folder: str, num_lines: int = 1000, seed: int = 0, huge_words: int = 20_000) -> str:
    """Lines cycle through KINDS (a duplicate repeats the line before it); returns the batch file's path."""
    rng = random.Random(seed)
    os.makedirs(folder, exist_ok=True)
    lines = []
    for i in range(num_lines):
        kind = KINDS[i % len(KINDS)]
        lines.append(lines[-1] if kind == "duplicate" and lines else hostile_line(
            "good" if kind == "duplicate" else kind, rng, i, folder, huge_words))
    path = os.path.join(folder, "hostile.jsonl")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return path
