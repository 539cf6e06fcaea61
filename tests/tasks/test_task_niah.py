"""The eight RULER NIAH tasks: exact lengths, needles where the evidence spans say, RULER's formats and questions."""

import re
import time

import pytest

from grumem.tasks import chunk_document, make_samples
from grumem.tasks.haystack import REPEAT_TEXT, essay_sentences
from grumem.tasks.niah import NIAH_TASKS

NUM_TOKENS = (2048, 5000)
NEEDLE = re.compile(r"One of the special magic (numbers|uuids) for ([\w\- ]+?) is: ([\w\-]+)\.")
VALUE = {"numbers": r"\d{7}", "uuids": r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"}


@pytest.fixture(scope="module", params=list(NIAH_TASKS))
def samples(request, tokenizer):
    return {n: make_samples(request.param, tokenizer, n, 3, seed=11) for n in NUM_TOKENS}


def test_exact_length(samples):
    for num_tokens, batch in samples.items():
        assert [s.num_tokens for s in batch] == [num_tokens] * len(batch)
        assert [s.index for s in batch] == list(range(len(batch)))


def test_every_answer_is_in_an_evidence_needle(samples, tokenizer):
    for sample in samples[5000]:
        spec = NIAH_TASKS[sample.task]
        assert sample.metric == "recall"
        assert len(sample.answers) == spec.num_values * spec.num_queries == len(sample.evidence_spans)
        needles = [tokenizer.decode(sample.context_ids[start:end]).strip() for start, end in sample.evidence_spans]
        for needle in needles:
            assert NEEDLE.fullmatch(needle), needle
            assert needle.split(" for ")[1].split(" is: ")[0] in sample.question
        for answer in sample.answers:
            assert re.fullmatch(VALUE[spec.value_type], answer)
            assert sum(answer in needle for needle in needles) == 1


def test_answers_occur_only_in_the_evidence(samples, tokenizer):
    for sample in samples[5000]:
        text = tokenizer.decode(sample.context_ids)
        for answer in sample.answers:
            assert text.count(answer) == 1, answer


def test_distractor_needles_are_not_evidence(samples, tokenizer):
    for sample in samples[5000]:
        spec = NIAH_TASKS[sample.task]
        found = NEEDLE.findall(tokenizer.decode(sample.context_ids))
        if spec.haystack == "needle":
            assert len(found) > 50  # the haystack is distractor needles
        else:
            assert len(found) == spec.num_keys * spec.num_values
        keys = {key for _, key, _ in found}
        queried = [key for key in keys if key in sample.question]
        assert len(queried) == spec.num_queries  # the other keys are distractors
        assert sorted(value for _, key, value in found if key in queried) == sorted(sample.answers)


def test_haystack_text(samples, tokenizer):
    sample = samples[2048][0]
    haystack = NIAH_TASKS[sample.task].haystack
    text = tokenizer.decode(sample.context_ids)
    if haystack == "repeat":
        assert text.startswith(REPEAT_TEXT + "\n" + REPEAT_TEXT)
    elif haystack == "essay":
        sentences = essay_sentences()
        assert text.startswith(sentences[0])  # the context opens with the essays' first piece, without a space
        assert re.sub(" " + NEEDLE.pattern, "", text).startswith("".join(sentences[:40]))
    else:
        assert NEEDLE.match(text)


def test_question_wording(samples):
    sample = samples[2048][0]
    spec = NIAH_TASKS[sample.task]
    if spec.num_values * spec.num_queries == 1:
        assert re.fullmatch(r"What is the special magic (number|uuid) for \S+ mentioned in the provided text\?",
                            sample.question)
    else:
        assert sample.question.startswith("What are all the special magic numbers for ")
        assert sample.question.count(", and ") == (spec.num_queries > 1)


def test_seeds(samples, tokenizer):
    task = samples[2048][0].task
    assert make_samples(task, tokenizer, 2048, 3, seed=11) == samples[2048]
    assert make_samples(task, tokenizer, 2048, 1, seed=11)[0] == samples[2048][0]  # independent of num_samples
    other = make_samples(task, tokenizer, 2048, 3, seed=12)
    assert all(a.answers != b.answers and a.context_ids != b.context_ids for a, b in zip(other, samples[2048]))
    assert len({s.evidence_spans[0] for s in samples[5000]}) > 1  # needles move between samples


def test_needle_depths_spread_over_the_essay(tokenizer):
    starts = [s.evidence_spans[0][0] / s.num_tokens for s in make_samples("niah_single_2", tokenizer, 4096, 24)]
    assert min(starts) < 0.25 and max(starts) > 0.75


def test_piece_ids_match_the_joined_text(samples, tokenizer):
    sample = samples[2048][0]
    reencoded = tokenizer.encode(tokenizer.decode(sample.context_ids), add_special_tokens=False)
    assert abs(len(reencoded) - sample.num_tokens) <= 2  # only the cut at the end of the haystack may differ


@pytest.mark.parametrize("num_tokens", [10, 20])
def test_too_short(tokenizer, num_tokens):
    with pytest.raises(ValueError, match=rf"niah_multivalue: num_tokens={num_tokens} is too small, at least \d+"):
        make_samples("niah_multivalue", tokenizer, num_tokens, 1)


def test_one_million_tokens(tokenizer):
    make_samples("niah_single_2", tokenizer, 2048, 1)  # the essay encoding is not what this test times
    start = time.perf_counter()
    sample = make_samples("niah_single_2", tokenizer, 1_000_000, 1, seed=5)[0]
    assert time.perf_counter() - start < 10
    assert sample.num_tokens == 1_000_000
    (start_token, end_token), = sample.evidence_spans
    assert sample.answers[0] in tokenizer.decode(sample.context_ids[start_token:end_token])
    chunks = chunk_document(sample.context_ids, 5000)
    assert len(chunks) == 200
    assert sample.evidence_chunks(5000) == sorted({start_token // 5000, (end_token - 1) // 5000})
