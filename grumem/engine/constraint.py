"""Constrained decoding of the GRU-Mem turn format as a small token-level state machine.

format: <think>...</think>\n<check>yes|no</check>\n<update>...</update>\n<next>continue|end</next><eos>
- "format" mode drives the whole turn: tag text is forced, free text may not end the turn, the two gates are
  choices, and caps force </think> and </update>. After check=no the update is forced empty: the candidate
  would be discarded anyway, so generating it is wasted decode.
- "gates" mode leaves the text free and only constrains the values after a <check> or <next> the model wrote.
Masks are rows of one (num_rows, vocab) table indexed per sequence; forced tokens bypass sampling. Per sequence and
token the CPU work is one dictionary look-up of the token's text and a tag check when that text holds a '>'.
"""
from collections import deque

import torch

from grumem.engine.sequence import TokenRole

ANY, NO_EOS, CHECK_CHOICE, NEXT_CHOICE = range(4)  # mask table rows
CHECK_OPTIONS, NEXT_OPTIONS = ("yes", "no"), ("continue", "end")
THINK, CHECK, UPDATE, NEXT, FREE, DONE = "think", "check", "update", "next", "free", "done"


TAGS = ("<think>", "</think>", "\n<check>", "</check>", "\n<update>", "</update>", "\n<next>", "</next>")


class GateGrammar:
    """What the state machine needs from the tokenizer, computed once: tag ids, choice ids, the mask table."""

    def __init__(self, tokenizer, device: torch.device | str = "cpu"):
        self.tokenizer = tokenizer
        encode = lambda text: tokenizer.encode(text, add_special_tokens=False)  # noqa: E731
        self.ids = {tag: encode(tag) for tag in TAGS}
        self.options = {
            CHECK: {name: encode(name) for name in CHECK_OPTIONS},
            NEXT: {name: encode(name) for name in NEXT_OPTIONS},
        }
        self.eos_token_id = tokenizer.eos_token_id
        table = torch.ones(4, len(tokenizer), dtype=torch.bool)
        table[NO_EOS, tokenizer.all_special_ids] = False
        for row, gate in ((CHECK_CHOICE, CHECK), (NEXT_CHOICE, NEXT)):
            firsts = [ids[0] for ids in self.options[gate].values()]
            assert len(set(firsts)) == len(firsts), f"{gate} options must differ in their first token"
            table[row] = False
            table[row, firsts] = True
        self.mask_table = table.to(device)
        self._pieces: dict[int, str] = {}

    def tag_ids(self, *tags: str) -> list[int]:
        return [i for tag in tags for i in self.ids[tag]]

    def piece(self, token_id: int) -> str:
        if token_id not in self._pieces:
            self._pieces[token_id] = self.tokenizer.decode([token_id])
        return self._pieces[token_id]


class GateState:
    """One sequence's position in the turn format."""

    def __init__(self, grammar: GateGrammar, mode: str, max_think_tokens: int | None, max_memory_tokens: int | None):
        assert mode in ("gates", "format")
        self.grammar, self.mode = grammar, mode
        self.caps = {THINK: max_think_tokens, UPDATE: max_memory_tokens}
        self.forced: deque[int] = deque()
        self.gates: dict[str, str] = {}
        self.phase, self.text, self.num_free = FREE, "", 0
        if mode == "format":
            self._force(grammar.tag_ids("<think>"), THINK)

    @property
    def done(self) -> bool:
        return self.phase == DONE and not self.forced

    def _force(self, ids: list[int], then: str) -> None:
        self.forced.extend(ids)
        self.phase, self.text, self.num_free = then, "", 0

    def next_mask(self) -> tuple[int, int]:
        """(mask row, forced token id or -1) for the next token."""
        if self.forced:
            return ANY, self.forced[0]
        if self.phase == CHECK:
            return CHECK_CHOICE, -1
        if self.phase == NEXT:
            return NEXT_CHOICE, -1
        return (NO_EOS if self.mode == "format" else ANY), -1

    def observe(self, token_id: int) -> int:
        """Advances on the token just emitted; returns its TokenRole."""
        if self.forced:
            assert token_id == self.forced[0]
            self.forced.popleft()
            return TokenRole.FORCED
        if self.phase in (CHECK, NEXT):
            self._choose(token_id)
            return TokenRole.CHOICE
        self._free_token(token_id)
        return TokenRole.SAMPLED

    def _choose(self, token_id: int) -> None:
        gate, tag_ids = self.phase, self.grammar.tag_ids
        name, ids = next((n, ids) for n, ids in self.grammar.options[gate].items() if ids[0] == token_id)
        self.gates[gate] = name
        self.forced.extend(ids[1:])  # the rest of a multi-token option
        if self.mode == "gates":
            self._force(tag_ids("</check>" if gate == CHECK else "</next>"), FREE)
        elif gate == CHECK and name == "no":
            self._force(tag_ids("</check>", "\n<update>", "</update>", "\n<next>"), NEXT)
        elif gate == CHECK:
            self._force(tag_ids("</check>", "\n<update>"), UPDATE)
        else:
            self._force(tag_ids("</next>") + [self.grammar.eos_token_id], DONE)

    def _free_token(self, token_id: int) -> None:
        piece = self.grammar.piece(token_id)
        self.text = (self.text + piece)[-32:]
        self.num_free += 1
        closes_tag = ">" in piece
        if self.mode == "gates":
            if closes_tag and self.text.endswith("<check>"):
                self.phase = CHECK
            elif closes_tag and self.text.endswith("<next>"):
                self.phase = NEXT
            return
        closing = "</think>" if self.phase == THINK else "</update>"
        if closes_tag and closing in self.text:
            self._close_free_phase(write_closing=False)
        elif self.phase == THINK and closes_tag and self.text.endswith("<check>"):
            self.phase, self.text = CHECK, ""  # the model skipped </think>: its <check> opens the gate
        elif self.caps[self.phase] is not None and self.num_free >= self.caps[self.phase]:
            self._close_free_phase(write_closing=True)

    def _close_free_phase(self, write_closing: bool) -> None:
        closing, opening, then = ("</think>", "\n<check>", CHECK) if self.phase == THINK else ("</update>", "\n<next>", NEXT)
        self._force(self.grammar.tag_ids(*((closing,) if write_closing else ()), opening), then)
