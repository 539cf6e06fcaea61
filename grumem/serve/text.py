"""Output text for the OpenAI endpoints: decoded as tokens arrive, cut at the first stop string (which is left out,
as OpenAI does), and streamed only up to what can no longer change (a partial UTF-8 character or the start of a
stop string is held back until the next tokens settle it).

Decoding is incremental, as vLLM's detokenizer: each update decodes a window of the last few tokens, not the whole
output, and the stop strings are searched only where new text can complete one, so a stream of n tokens costs O(n)
rather than O(n^2). It assumes the decode of more tokens extends the decode of fewer once characters are complete, as
byte-level BPE tokenizers (SmolLM2, Llama 3, Qwen) do.
"""

HELD_CHARACTER = "\ufffd"  # what a token ending inside a multi-byte character decodes to


class TextOutput:
    def __init__(self, tokenizer, stop: list[str]):
        self.tokenizer, self.stop = tokenizer, stop
        self.token_ids: list[int] = []
        self.text = ""
        self.stopped = False  # a stop string was found: the output ends here
        self.num_streamed = 0  # characters already sent
        self._settled = ""  # text of token_ids[:_read_offset], complete characters only
        self._prefix_offset = self._read_offset = 0  # the window [prefix, read) gives the next piece its context

    def update(self, token_ids: list[int]) -> None:
        """Takes the output's token ids so far (a longer list each time; ignored once stopped)."""
        if self.stopped:
            return
        searched = max(0, len(self._settled) - max(map(len, self.stop), default=0) + 1)
        self.token_ids = list(token_ids)
        context = self._decode(self.token_ids[self._prefix_offset:self._read_offset])
        window = self._decode(self.token_ids[self._prefix_offset:])
        pending = window[len(context):]
        if pending and not pending.endswith(HELD_CHARACTER):
            self._settled += pending
            self._prefix_offset, self._read_offset, pending = self._read_offset, len(self.token_ids), ""
        self.text = self._settled + pending
        cut = self._first_stop(self.text, searched)
        if cut is not None:
            self.text, self.stopped = self.text[:cut], True
            self.token_ids = self._tokens_through_stop()

    def delta(self, final: bool) -> str:
        """The text not yet streamed that is settled (all of it when final)."""
        end = len(self.text)
        if not final and not self.stopped:
            end = len(self.text.rstrip(HELD_CHARACTER))  # byte-fallback tokenizers: one per pending byte
            if self.stop:
                end = max(self.num_streamed, end - (max(map(len, self.stop)) - 1))
        new, self.num_streamed = self.text[self.num_streamed:end], max(self.num_streamed, end)
        return new

    def _decode(self, token_ids: list[int]) -> str:
        return self.tokenizer.decode(token_ids, skip_special_tokens=True)

    def _first_stop(self, text: str, start: int = 0) -> int | None:
        found = [i for i in (text.find(s, start) for s in self.stop) if i >= 0]
        return min(found, default=None)

    def _tokens_through_stop(self) -> list[int]:
        """The shortest prefix of the tokens whose text holds the stop string (the token that completed it last)."""
        n = len(self.token_ids)
        while n > 1 and self._first_stop(self._decode(self.token_ids[: n - 1])) is not None:
            n -= 1
        return self.token_ids[:n]
