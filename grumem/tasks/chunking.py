"""Token-level chunking of a document: chunk k holds tokens [k * chunk_tokens, (k + 1) * chunk_tokens).

The agent loop reads chunk_document's chunks; Sample.evidence_chunks uses span_chunks, so both share this arithmetic.
"""


def _check(chunk_tokens: int) -> None:
    if chunk_tokens <= 0:
        raise ValueError(f"chunk_tokens must be positive, got {chunk_tokens}")


def num_chunks(num_tokens: int, chunk_tokens: int) -> int:
    _check(chunk_tokens)
    return -(-num_tokens // chunk_tokens)


def chunk_document(doc_ids: list[int], chunk_tokens: int) -> list[list[int]]:
    """Consecutive slices of chunk_tokens ids (the last may be shorter); [] for an empty document."""
    return [
        doc_ids[k * chunk_tokens : (k + 1) * chunk_tokens] for k in range(num_chunks(len(doc_ids), chunk_tokens))
    ]


def span_chunks(start: int, end: int, chunk_tokens: int) -> range:
    """Indices of the chunks that the half-open token span [start, end) touches."""
    _check(chunk_tokens)
    assert 0 <= start < end, (start, end)
    return range(start // chunk_tokens, (end - 1) // chunk_tokens + 1)
