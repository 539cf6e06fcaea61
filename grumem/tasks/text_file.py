"""TextFile: a UTF-8 document on disk, read and tokenised block by block, so that a file of any size is read in
bounded memory (a block of text and its tokens, never the whole document), and a batch of many documents holds
no file open between blocks.

Blocks are cut before a space that starts a word: byte-level BPE pre-tokenisers (SmolLM2, Llama 3, Qwen) split there
anyway, so the tokens of the pieces are those of the whole text (tested). A block with no such space (a megabyte
without one) is cut at its end, where a word may then be tokenised in two parts.
"""
from __future__ import annotations

import codecs
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

BLOCK_BYTES = 1 << 14  # about 4K tokens of English: what a document being read holds beyond its chunk


@dataclass(frozen=True, slots=True)
class TextFile:
    path: str
    block_bytes: int = BLOCK_BYTES

    def check(self) -> None:
        """Reads the file through once (bounded memory): raises ValueError when it cannot be read, is not UTF-8 or
        holds no text."""
        has_text = False
        for text in self.texts():  # to the end: a bad byte anywhere is found now, not part-way through reading
            has_text = has_text or not text.isspace()
        if not has_text:
            raise ValueError(f"{self.path}: empty document: no text to read")

    def texts(self) -> Iterator[str]:
        """The file's text in pieces of about block_bytes, each cut before a space that starts a word."""
        decoder = codecs.getincrementaldecoder("utf-8")()
        pending, offset = "", 0
        while block := self._read(offset):
            pending += self._decode(decoder, block, offset)
            offset += len(block)
            cut = _last_word_start(pending)
            if cut > 0:
                yield pending[:cut]
                pending = pending[cut:]
        pending += self._decode(decoder, b"", offset, final=True)
        if pending:
            yield pending

    def _read(self, offset: int) -> bytes:
        """One block; the file is open only while it is read (a batch reads many documents at once)."""
        try:
            with open(self.path, "rb") as f:
                f.seek(offset)
                return f.read(self.block_bytes)
        except OSError as e:
            raise ValueError(f"{self.path}: cannot read ({e.strerror})") from e

    def chunks(self, tokenizer: PreTrainedTokenizerBase, chunk_tokens: int) -> Iterator[list[int]]:
        """Consecutive chunks of chunk_tokens token ids (the last may be shorter), as chunking.chunk_document cuts
        the ids of the whole text."""
        buffer: list[int] = []
        for text in self.texts():
            buffer += tokenizer.encode(text, add_special_tokens=False)
            while len(buffer) >= chunk_tokens:
                yield buffer[:chunk_tokens]
                del buffer[:chunk_tokens]
        if buffer:
            yield buffer

    def _decode(self, decoder, block: bytes, offset: int, final: bool = False) -> str:
        buffered = len(decoder.getstate()[0])  # the bytes of a character the previous block ended inside
        try:
            return decoder.decode(block, final=final)
        except UnicodeDecodeError as e:
            raise ValueError(f"{self.path}: not UTF-8 text ({e.reason} at byte {offset - buffered + e.start})") from e


def _last_word_start(text: str) -> int:
    """The index of the last space followed by a character that is not whitespace; 0 when there is none."""
    i = len(text) - 1
    while (i := text.rfind(" ", 0, i)) > 0:
        if not text[i + 1].isspace():
            return i
    return 0
