"""Answer scoring: sub_em for QA (MemAgent's protocol) and the fraction of needle values recalled for NIAH (RULER's
string_match_all). Both return a float in [0, 1]; an empty answers list scores 0."""

from __future__ import annotations

import re
import string

from grumem.tasks.common import Sample

_PUNCTUATION = str.maketrans("", "", string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """SQuAD's normalisation: lowercase, drop ASCII punctuation, drop articles, collapse whitespace."""
    return " ".join(_ARTICLES.sub(" ", text.lower().translate(_PUNCTUATION)).split())


def sub_em(prediction: str, answers: list[str]) -> float:
    """1.0 if a normalised answer is a substring of the normalised prediction; answers that normalise to "" never
    match (otherwise an answer like "the" would reward any prediction)."""
    pred = normalize_answer(prediction)
    return float(any(gold and gold in pred for gold in map(normalize_answer, answers)))


def niah_recall(prediction: str, answers: list[str]) -> float:
    """Fraction of the answers contained in the prediction, case-insensitive."""
    if not answers:
        return 0.0
    pred = prediction.lower()
    return sum(answer.lower() in pred for answer in answers) / len(answers)


METRICS = {"sub_em": sub_em, "recall": niah_recall}


def score(sample: Sample, prediction: str) -> float:
    if sample.metric not in METRICS:
        raise ValueError(f"unknown metric {sample.metric!r}; expected one of {sorted(METRICS)}")
    return METRICS[sample.metric](prediction, sample.answers)
