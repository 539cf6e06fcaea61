"""sub_em, niah_recall, normalize_answer and score: the rewards and accuracies of every task."""

import pytest

from grumem.tasks import Sample, niah_recall, score, sub_em
from grumem.tasks.metrics import normalize_answer


@pytest.mark.parametrize(
    "text, expected",
    [
        ("The Beatles!", "beatles"),
        ("  A   tale\tof\ntwo  cities. ", "tale of two cities"),
        ("an apple, the pear; a plum", "apple pear plum"),
        ("theory anthem", "theory anthem"),  # articles only as whole words
        ("3,677 seated", "3677 seated"),
        ("Ça VA — Müller", "ça va — müller"),  # lowercase unicode; only ASCII punctuation is dropped
        ("", ""),
    ],
)
def test_normalize_answer(text, expected):
    assert normalize_answer(text) == expected


@pytest.mark.parametrize(
    "prediction, answers, expected",
    [
        ("It was the Beatles.", ["The Beatles"], 1.0),
        ("beatles", ["The Beatles!"], 1.0),
        ("The answer is Paris, France", ["London", "paris"], 1.0),  # any answer suffices
        ("Beatlemania", ["Beatles"], 0.0),
        ("Paris", ["Paris, France"], 0.0),  # the gold must sit inside the prediction, not the reverse
        ("", ["Paris"], 0.0),
        ("Paris", [], 0.0),
        ("the", ["The"], 0.0),  # a gold that normalises to "" matches nothing
        ("Die Antwort ist MÜNCHEN.", ["München"], 1.0),
        ("Tokyo", ["東京"], 0.0),
        ("答えは東京です", ["東京"], 1.0),
    ],
)
def test_sub_em(prediction, answers, expected):
    assert sub_em(prediction, answers) == expected


@pytest.mark.parametrize(
    "prediction, answers, expected",
    [
        ("1234567 and 7654321", ["1234567", "7654321", "1111111"], 2 / 3),
        ("7654321", ["1234567", "7654321"], 0.5),
        ("ABCDEF12-0000", ["abcdef12-0000"], 1.0),  # case-insensitive (uuids)
        ("", ["1234567"], 0.0),
        ("1234567", [], 0.0),
        ("ÉCOLE-NORMALE", ["école-normale"], 1.0),
        ("123456", ["1234567"], 0.0),  # a prefix of the value is not the value
    ],
)
def test_niah_recall(prediction, answers, expected):
    assert niah_recall(prediction, answers) == pytest.approx(expected)


def test_score_dispatches_on_the_sample_metric():
    answers = ["1234567", "7654321"]
    recall = Sample("niah_multivalue", 0, [1], "q?", answers, [(0, 1)], "recall")
    exact = Sample("squad", 0, [1], "q?", answers, [(0, 1)], "sub_em")
    assert score(recall, "the value is 1234567") == 0.5
    assert score(exact, "the value is 1234567") == 1.0
    with pytest.raises(ValueError, match="unknown metric 'bleu'"):
        score(Sample("x", 0, [1], "q?", answers, [(0, 1)], "bleu"), "1234567")
