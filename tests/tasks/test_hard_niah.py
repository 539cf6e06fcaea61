"""The hard needle tasks and the gates' training mix: what each kind puts where, and training data disjoint from
every evaluation sample (keys, values, wordings, haystack offsets)."""
import itertools
import re

import pytest

from grumem.cli.train import TRAIN_SEED
from grumem.tasks import TASKS, make_samples, sample_stream
from grumem.tasks.hard_niah import HARD_TASKS, TRAINING_MIX, WORDINGS, training_stream
from grumem.tasks.chunking import span_chunks
from grumem.tasks.haystack import REPEAT_TEXT
from grumem.tasks.splits import split_of

KEY = re.compile(r"[a-z]+(?:-[a-z]+)+")


def decoded(tokenizer, sample, spans):
    return [tokenizer.decode(sample.context_ids[a:b]).strip() for a, b in spans]


def words(text: str) -> set[str]:
    return {w.lower() for w in re.findall(r"[A-Za-z]+", text) if len(w) > 3}


def test_distractors_share_a_word_with_the_asked_key_and_are_not_evidence(tokenizer):
    for sample in make_samples("niah_distractor", tokenizer, 4096, 4, seed=3):
        key = sample.question.split("for ")[1].split(" mentioned")[0]
        [needle] = decoded(tokenizer, sample, sample.evidence_spans)
        assert f"for {key} is: {sample.answers[0]}." in needle
        distractors = decoded(tokenizer, sample, sample.distractor_spans)
        assert len(distractors) == 3
        for text in distractors:
            other = text.split("for ")[1].split(" is:")[0]
            assert other != key and set(other.split("-")) & set(key.split("-"))
            assert sample.answers[0] not in text
        evidence = set(sample.evidence_chunks(512))
        assert not evidence & set(sample.distractor_chunks(512))


def test_paraphrased_questions_share_only_the_key_with_their_needle(tokenizer):
    for sample in make_samples("niah_paraphrase", tokenizer, 4096, 8, seed=3):
        [needle] = decoded(tokenizer, sample, sample.evidence_spans)
        assert sample.answers[0] in needle and "special magic" not in needle
        key = next(k for k in KEY.findall(sample.question) if k in needle)
        assert words(sample.question) & words(needle) <= set(key.split("-"))


def test_two_needles_lie_in_different_halves(tokenizer):
    for sample in make_samples("niah_two_needles", tokenizer, 4096, 8, seed=3):
        assert len(sample.answers) == 2 and len(sample.evidence_spans) == 2
        first, second = sample.evidence_spans
        assert first[1] <= 2048 <= second[0]
        assert max(span_chunks(*first, 1024)) < min(span_chunks(*second, 1024))  # never one chunk


def test_every_kind_of_the_training_mix_is_made(tokenizer):
    docs = list(itertools.islice(training_stream(tokenizer, 2048, TRAIN_SEED), len(TRAINING_MIX)))
    assert [len(d.evidence_spans) for d in docs] == [spec.num_values for spec in TRAINING_MIX]
    assert [len(d.distractor_spans) for d in docs] == [spec.num_distractors for spec in TRAINING_MIX]
    assert all(d.num_tokens == 2048 for d in docs)


def keys(question: str) -> set[str]:
    """The word keys a question asks about (uuid keys are values of their own)."""
    return {w for w in re.findall(r"[\w-]+", question) if "-" in w and not re.fullmatch(r"[0-9a-f-]+", w)}


def repeats(tokenizer, sample) -> bool:
    return REPEAT_TEXT[:20] in tokenizer.decode(sample.context_ids[:64])


def evaluation_samples(tokenizer):
    """What `grumem run`, `grumem eval` and the README's tables read: the eval split at their lengths."""
    niah = [t for t in TASKS if t.startswith("niah")]
    return [s for task in niah for n in (2048, 4096) for s in make_samples(task, tokenizer, n, 8)]


def test_training_documents_are_disjoint_from_every_evaluation_sample(tokenizer):
    train = list(itertools.islice(training_stream(tokenizer, 2048, TRAIN_SEED), 90))
    train += list(itertools.islice(sample_stream("niah_single_2", tokenizer, 2048, TRAIN_SEED, block=8), 16))
    held_out = evaluation_samples(tokenizer)
    train_values = {a for s in train for a in s.answers} | {k for s in train for k in keys(s.question)}
    eval_values = {a for s in held_out for a in s.answers} | {k for s in held_out for k in keys(s.question)}
    assert train_values and eval_values and not train_values & eval_values
    assert {split_of(v) for v in train_values} == {"train"} and {split_of(v) for v in eval_values} == {"eval"}
    # haystack text: an evaluation essay starts at the first sentence, a training one in the second half (the
    # repeated filler of NIAH single 1 is one paragraph for all)
    windows = lambda docs, step: {tuple(s.context_ids[i:i + 16]) for s in docs if not repeats(tokenizer, s)  # noqa
                                  for i in range(0, s.num_tokens - 16, step)}
    assert not windows(train, 7) & windows(held_out, 16)
    assert not set(WORDINGS["train"]["needles"]) & set(WORDINGS["eval"]["needles"])
    assert not set(WORDINGS["train"]["questions"]) & set(WORDINGS["eval"]["questions"])


@pytest.mark.parametrize("task", list(HARD_TASKS))
def test_hard_tasks_are_deterministic_and_exact_in_length(tokenizer, task):
    a, b = make_samples(task, tokenizer, 3000, 2, seed=5), make_samples(task, tokenizer, 3000, 2, seed=5)
    assert a == b and [s.num_tokens for s in a] == [3000, 3000]
    with pytest.raises(ValueError, match="too small"):
        make_samples(task, tokenizer, 16, 1)
