"""chunk_document and Sample.evidence_chunks: token-boundary chunks and the chunks that hold each evidence span."""

import pytest

from grumem.tasks import EXIT_TIMINGS, Sample, chunk_document, exit_timing, make_samples

CHUNK_TOKENS = (1, 7, 512, 1000)


def _sample(num_tokens: int, spans: list[tuple[int, int]]) -> Sample:
    return Sample("toy", 0, list(range(num_tokens)), "q?", ["a"], spans, "sub_em")


def _touched(chunks: list[list[int]], spans: list[tuple[int, int]]) -> list[int]:
    """Independent oracle: walk the chunks by their lengths and test overlap with each span."""
    touched, offset = [], 0
    for k, chunk in enumerate(chunks):
        if any(start < offset + len(chunk) and end > offset for start, end in spans):
            touched.append(k)
        offset += len(chunk)
    return touched


def test_chunk_document_slices_at_token_boundaries():
    assert chunk_document(list(range(10)), 4) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert chunk_document(list(range(8)), 4) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert chunk_document([5], 4) == [[5]]
    assert chunk_document([], 4) == []


@pytest.mark.parametrize("chunk_tokens", [0, -3])
def test_chunk_document_rejects_non_positive_sizes(chunk_tokens):
    with pytest.raises(ValueError, match="chunk_tokens"):
        chunk_document([1, 2, 3], chunk_tokens)
    with pytest.raises(ValueError, match="chunk_tokens"):
        _sample(10, [(0, 1)]).evidence_chunks(chunk_tokens)


@pytest.mark.parametrize(
    "spans, expected",
    [
        ([(0, 1)], [0]),
        ([(3, 4)], [0]),  # last token of chunk 0
        ([(4, 5)], [1]),  # first token of chunk 1
        ([(3, 5)], [0, 1]),  # straddles the boundary
        ([(9, 10), (0, 2), (1, 3)], [0, 2]),  # unsorted, overlapping, duplicate chunks
        ([(2, 10)], [0, 1, 2]),
    ],
)
def test_evidence_chunks_by_hand(spans, expected):
    sample = _sample(10, spans)
    assert sample.evidence_chunks(4) == expected
    assert sample.evidence_chunks(4) == _touched(chunk_document(sample.context_ids, 4), spans)
    last = expected[-1]
    assert [exit_timing(stop, sample.evidence_chunks(4)) for stop in (last - 1, last, last + 1)] == list(EXIT_TIMINGS)


def test_exit_timing_without_evidence_is_none():
    assert _sample(10, []).evidence_chunks(4) == []
    assert exit_timing(0, []) is None


@pytest.mark.parametrize("task", ["niah_multivalue", "hotpotqa"])
def test_evidence_chunks_agree_with_chunk_document(tokenizer, task):
    for sample in make_samples(task, tokenizer, 4096, 2, seed=3):
        for chunk_tokens in CHUNK_TOKENS:
            chunks = chunk_document(sample.context_ids, chunk_tokens)
            assert sum(map(len, chunks)) == sample.num_tokens
            assert sample.evidence_chunks(chunk_tokens) == _touched(chunks, sample.evidence_spans)


def test_evidence_chunks_hold_the_needles(tokenizer):
    sample = make_samples("niah_multiquery", tokenizer, 4096, 1, seed=1)[0]
    for chunk_tokens in CHUNK_TOKENS[1:]:
        chunks = chunk_document(sample.context_ids, chunk_tokens)
        held = tokenizer.decode([t for k in sample.evidence_chunks(chunk_tokens) for t in chunks[k]])
        missed = [tokenizer.decode(c) for k, c in enumerate(chunks) if k not in sample.evidence_chunks(chunk_tokens)]
        for answer in sample.answers:
            assert answer in held
            assert not any(answer in text for text in missed)
