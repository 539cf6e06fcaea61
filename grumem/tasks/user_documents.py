"""Your own documents as samples: a UTF-8 file or a text with a question, one at a time or as JSON lines
({"document": path | "context": text, "question": ..., "answers": [...]}). Each field is checked with a message
that names it (and the line); the CLI, the server and the replicas share these checks.

One coercion, documented: "answers" given as one string is one gold answer (never split into characters).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from grumem.tasks.common import Sample
from grumem.tasks.text_file import TextFile

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

BATCH_FIELDS = ("document", "context", "question", "answers")


def read_document(path: str) -> str:
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from e
    except OSError as e:
        raise ValueError(f"{path}: cannot read ({e.strerror})") from e


@dataclass(frozen=True, slots=True)
class BatchLine:
    number: int  # from 1
    digest: str  # of the line's text: with the number, what a resumed run recognises a finished line by
    item: dict[str, Any] | ValueError  # its checked fields, or what is wrong with it


def read_batch(path: str) -> list[BatchLine]:
    """One entry per non-blank line; raises ValueError when the file itself cannot be read."""
    lines = []
    for number, line in enumerate(read_document(path).splitlines(), 1):
        if line.strip():
            try:
                item = parse_batch_line(line, number)
            except ValueError as e:
                item = e
            lines.append(BatchLine(number, hashlib.sha256(line.encode()).hexdigest()[:16], item))
    return lines


def parse_batch_line(line: str, number: int) -> dict[str, Any]:
    """The checked fields of one batch line (the document not yet read)."""
    try:
        item = json.loads(line)
    except json.JSONDecodeError as e:
        raise ValueError(f"line {number}: not JSON ({e.msg})") from None
    if not isinstance(item, dict):
        raise ValueError(f"line {number}: a JSON object is needed, got {type(item).__name__}")
    unknown = sorted(set(item) - set(BATCH_FIELDS))
    if unknown:
        raise ValueError(f"line {number}: unknown fields {unknown}; valid: {list(BATCH_FIELDS)}")
    if ("document" in item) == ("context" in item):
        raise ValueError(f'line {number}: needs exactly one of "document" (a file path) or "context" (the text)')
    for name in ("document", "context", "question"):
        if name in item and not isinstance(item[name], str):
            raise ValueError(f'line {number}: "{name}" must be a string, got {type(item[name]).__name__}')
    item["question"] = check_question(item.get("question"), f"line {number}: ")
    item["answers"] = check_answers(item.get("answers"), f"line {number}: ")
    return item


def check_question(question: Any, where: str = "") -> str:
    if not isinstance(question, str) or not question.strip():
        raise ValueError(f'{where}"question" must be a non-empty string')
    return question


def check_answers(answers: Any, where: str = "") -> list[str]:
    if answers is None:
        return []
    if isinstance(answers, str):
        return [answers]
    if not isinstance(answers, list) or not all(isinstance(a, str) for a in answers):
        raise ValueError(f'{where}"answers" must be a list of strings (or one string)')
    return list(answers)


def user_sample(tokenizer: PreTrainedTokenizerBase, text: str, question: str, answers: list[str], index: int = 0,
                where: str = "") -> Sample:
    """A document text and its question as a sample (no evidence labels; scored by sub_em when answers are given)."""
    if not text.strip():
        raise ValueError(f"{where}empty document: no text to read")
    return token_sample(tokenizer.encode(text, add_special_tokens=False), question, answers, index, where)


def token_sample(ids: list[int], question: str, answers: list[str], index: int = 0, where: str = "") -> Sample:
    """A tokenised document and its question as a sample."""
    if not ids:
        raise ValueError(f"{where}empty document: no tokens to read")
    return Sample("ask", index, list(ids), check_question(question, where), check_answers(answers, where), [], "sub_em")


def file_sample(path: str, question: str, answers: list[str], index: int = 0, where: str = "") -> Sample:
    """A document file and its question as a sample; the file is checked now (read through once, in bounded
    memory) and tokenised chunk by chunk as the loop reaches it, so its size does not matter."""
    document = TextFile(path)
    try:
        document.check()
    except ValueError as e:
        raise ValueError(f"{where}{e}") from None
    return Sample("ask", index, [], check_question(question, where), check_answers(answers, where), [], "sub_em",
                  document=document)


def batch_sample(tokenizer: PreTrainedTokenizerBase, item: dict[str, Any], number: int, index: int) -> Sample:
    """The sample of parsed batch line `number`: its "context" text or its "document" file."""
    where = f"line {number}: "
    if "document" in item:
        return file_sample(item["document"], item["question"], item["answers"], index, where)
    return user_sample(tokenizer, item["context"], item["question"], item["answers"], index, where)
