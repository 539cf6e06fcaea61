"""Quoted thoughts: the <think> of a memory turn copies one sentence of the section, token for token.

The prompt asks for a quote; decoding enforces it. The model chooses where the quote starts (one of the section's
sentence starts) and, while several places still match what it has copied, which way it goes on; once only one
place matches, the rest of that sentence is forced. A gate then judges words the section really holds, never a
paraphrase with copying errors, and what the gates learn on labelled quotes is what they meet when reading.
A sentence ends after a token ending in . ! or ? (closing quotes and brackets aside) or holding a line break.
"""
from collections.abc import Callable, Sequence

_CLOSERS = " \"')]"


def ends_sentence(piece: str) -> bool:
    return "\n" in piece or piece.rstrip(_CLOSERS)[-1:] in (".", "!", "?")


def sentence_spans(section: Sequence[int], piece: Callable[[int], str]) -> list[tuple[int, int]]:
    """(start, end) of each sentence of the section that holds a letter or digit, in token positions; the last may
    run to the section's end."""
    spans, start, has_text = [], 0, False
    for p, token_id in enumerate(section):
        has_text = has_text or any(c.isalnum() for c in piece(token_id))
        if ends_sentence(piece(token_id)) or p == len(section) - 1:
            if has_text:
                spans.append((start, p + 1))
            start, has_text = p + 1, False
    return spans


class Quote:
    """Where in the section a quote being written can still be: the positions of the token it copies next."""

    def __init__(self, section: Sequence[int], piece: Callable[[int], str]):
        self.section, self.piece = section, piece
        self.at = [start for start, _ in sentence_spans(section, piece)]
        self.ended = not self.at

    def choices(self) -> tuple[int, ...]:
        """The token ids that go on copying from some place (sorted); one id means the next token is forced."""
        return tuple(sorted({self.section[p] for p in self.at}))

    def advance(self, token_id: int) -> None:
        self.at = [p + 1 for p in self.at if self.section[p] == token_id]
        assert self.at, "the token copies nothing: the processor allows only choices()"
        self.ended = ends_sentence(self.piece(token_id))
        self.at = [p for p in self.at if p < len(self.section)]
        self.ended = self.ended or not self.at

    def copy(self) -> "Quote":
        other = Quote.__new__(Quote)
        other.section, other.piece, other.at, other.ended = self.section, self.piece, list(self.at), self.ended
        return other
