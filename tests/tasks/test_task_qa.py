"""RULER-HotpotQA and SQuAD: gold documents among distractors, at most num_tokens, RULER's document format."""

import re

import pytest

from grumem.tasks import make_samples
from grumem.tasks.hotpotqa import hotpotqa_dataset
from grumem.tasks.squad import squad_dataset

DATASETS = {"hotpotqa": hotpotqa_dataset, "squad": squad_dataset}
NUM_TOKENS = 8192


@pytest.fixture(scope="module", params=list(DATASETS))
def samples(request, tokenizer):
    return make_samples(request.param, tokenizer, NUM_TOKENS, 3, seed=4)


def _documents(text: str) -> list[tuple[int, str]]:
    parts = re.split(r"(?:^|\n\n)Document (\d+):\n", text)
    assert parts[0] == ""
    return [(int(n), body) for n, body in zip(parts[1::2], parts[2::2])]


def test_length_at_most_and_close(samples):
    for sample in samples:
        assert 0.9 * NUM_TOKENS < sample.num_tokens <= NUM_TOKENS
        assert sample.metric == "sub_em"


def test_document_format(samples, tokenizer):
    for sample in samples:
        documents = _documents(tokenizer.decode(sample.context_ids))
        assert [n for n, _ in documents] == list(range(1, len(documents) + 1))
        assert len(documents) > 20
        bodies = [body for _, body in documents]
        assert len(set(bodies)) == len(bodies)  # no document twice


def test_gold_documents_are_the_evidence(samples, tokenizer):
    for sample in samples:
        dataset = DATASETS[sample.task]()
        item = next(i for i in dataset.items if i.question == sample.question)
        assert item.answers == sample.answers
        gold = {dataset.docs[d] for d in item.gold}
        evidence = {tokenizer.decode(sample.context_ids[start:end]) for start, end in sample.evidence_spans}
        assert evidence == gold
        assert len(sample.evidence_spans) == (2 if sample.task == "hotpotqa" else 1)
        bodies = [body for _, body in _documents(tokenizer.decode(sample.context_ids))]
        assert gold <= set(bodies)


def test_hotpotqa_gold_is_named_in_supporting_facts_and_distractors_come_from_other_questions(tokenizer):
    dataset = hotpotqa_dataset()
    sample = make_samples("hotpotqa", tokenizer, 4096, 1, seed=9)[0]
    item = next(i for i in dataset.items if i.question == sample.question)
    titles = [tokenizer.decode(sample.context_ids[start:end]).split("\n")[0] for start, end in sample.evidence_spans]
    bodies = [body for _, body in _documents(tokenizer.decode(sample.context_ids))]
    own = {dataset.docs[d] for d in item.excluded}
    assert [b for b in bodies if b in own] == [b for b in bodies if b.split("\n")[0] in titles]
    assert all(sum(body.startswith(title + "\n") for body in bodies) == 1 for title in titles)


def test_squad_answers_are_in_the_gold_paragraph(samples, tokenizer):
    for sample in samples:
        if sample.task == "squad":
            (start, end), = sample.evidence_spans
            paragraph = tokenizer.decode(sample.context_ids[start:end])
            assert any(answer in paragraph for answer in sample.answers)


def test_piece_ids_match_the_joined_text(samples, tokenizer):
    sample = samples[0]
    assert tokenizer.encode(tokenizer.decode(sample.context_ids), add_special_tokens=False) == sample.context_ids


def test_seeds(samples, tokenizer):
    task = samples[0].task
    assert make_samples(task, tokenizer, NUM_TOKENS, 3, seed=4) == samples
    assert make_samples(task, tokenizer, NUM_TOKENS, 1, seed=4)[0] == samples[0]
    other = make_samples(task, tokenizer, NUM_TOKENS, 3, seed=5)
    assert all(a.question != b.question and a.context_ids != b.context_ids for a, b in zip(other, samples))


def test_gold_position_varies(tokenizer):
    positions = [s.evidence_spans[0][0] / s.num_tokens for s in make_samples("squad", tokenizer, 4096, 12, seed=2)]
    assert min(positions) < 0.3 and max(positions) > 0.7


@pytest.mark.parametrize("task", list(DATASETS))
def test_too_short(task, tokenizer):
    with pytest.raises(ValueError, match=rf"{task}: num_tokens=40 is too small, at least \d+ are needed"):
        make_samples(task, tokenizer, 40, 1)


def test_long_contexts(tokenizer):
    sample = make_samples("hotpotqa", tokenizer, 200_000, 1)[0]
    assert 199_000 < sample.num_tokens <= 200_000
    squad = make_samples("squad", tokenizer, 1_000_000, 1)[0]  # the whole SQuAD dev set is about 215K tokens
    assert len(_documents(tokenizer.decode(squad.context_ids))) == len(squad_dataset().docs)
