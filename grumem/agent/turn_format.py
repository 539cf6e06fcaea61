"""The GRU-Mem turn format as a small token-level state machine: what the engine's logits processor
(format_processor.py) runs per sequence, and what the trainer replays to recover the masks a turn was sampled under.

format: <think>...</think>\n<check>yes|no</check>\n<update>\n...</update>\n<next>continue|end</next><eos>
- "format" mode drives the whole turn: tag text is forced, free text may not end the turn nor start with a tag,
  the two gates are choices, and caps (tokens, or lines of thinking) force </think> and </update>. After check=no
  the update is forced empty: the candidate would be discarded anyway, so generating it is wasted decode.
- "gates" mode leaves the text free and only constrains the values after a <check> or <next> the model wrote.
- With a section to quote (FormatArgs.quote, "format" mode), the thought is one sentence copied from it (quote.py).
Masks are rows of one (num_rows, vocab) table indexed per sequence, or for a quote's choices the allowed ids; forced
tokens bypass sampling. Per sequence and token the CPU work is one list look-up of the token's text and a tag check
when that text holds a '>'.
"""
import copy
from collections import deque
from dataclasses import dataclass

import torch

from grumem.agent.quote import Quote
from grumem.engine import TokenRole

ANY, NO_EOS, CHECK_CHOICE, NEXT_CHOICE, TEXT_START = range(5)  # mask table rows
CHECK_OPTIONS, NEXT_OPTIONS = ("yes", "no"), ("continue", "end")
THINK, CHECK, UPDATE, NEXT, FREE, DONE = "think", "check", "update", "next", "free", "done"


# the memory starts on its own line: small models then write a sentence there rather than a gate-like word
TAGS = ("<think>", "</think>", "\n<check>", "</check>", "\n<update>\n", "</update>", "\n<next>", "</next>")
POSITIVE = {CHECK: "yes", NEXT: "end"}  # the options a gate prior favours
FORMAT_MODES = ("gates", "format")


@dataclass(frozen=True, slots=True)
class FormatArgs:
    """A request's settings of the turn format (its args to the format processor)."""

    mode: str = "format"  # "format" (the whole turn) or "gates" (only the values after a <check> or <next>)
    max_think_tokens: int | None = None  # force </think> after this many thinking tokens
    max_memory_tokens: int | None = None  # force </update> after this many memory tokens
    max_think_lines: int | None = None  # force </think> once this many lines of thinking are written
    evidence_offset: float | None = None  # the gate prior's offset (gate_prior.py); None: no prior
    quote: tuple[int, ...] | None = None  # the section the thought quotes ("format" mode, quote.py); None: free text

    def __post_init__(self):
        if self.mode not in FORMAT_MODES:
            raise ValueError(f"format mode must be one of {FORMAT_MODES}, got {self.mode!r}")
        if self.quote is not None and self.mode != "format":
            raise ValueError("a quoted thought needs format mode 'format' (mode 'gates' leaves the text free)")
        for name in ("max_think_tokens", "max_memory_tokens", "max_think_lines"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1 or None, got {getattr(self, name)}")


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
        self.newline_ids = encode("\n")
        table = torch.ones(5, len(tokenizer), dtype=torch.bool)
        table[NO_EOS, tokenizer.all_special_ids] = False
        self.pieces = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])  # each token's text
        # a thought or a memory starts with text: models that skip to the next tag here leave the phase empty
        table[TEXT_START] = table[NO_EOS]
        table[TEXT_START, [i for i, p in enumerate(self.pieces) if p.lstrip().startswith("<")]] = False
        for row, gate in ((CHECK_CHOICE, CHECK), (NEXT_CHOICE, NEXT)):
            firsts = [ids[0] for ids in self.options[gate].values()]
            assert len(set(firsts)) == len(firsts), f"{gate} options must differ in their first token"
            table[row] = False
            table[row, firsts] = True
        self.mask_table = table.to(device)

    def tag_ids(self, *tags: str) -> list[int]:
        return [i for tag in tags for i in self.ids[tag]]

    def piece(self, token_id: int) -> str:
        return self.pieces[token_id]


class GateState:
    """One sequence's position in the turn format."""

    def __init__(self, grammar: GateGrammar, args: FormatArgs):
        self.grammar, self.mode = grammar, args.mode
        self.caps = {THINK: args.max_think_tokens, UPDATE: args.max_memory_tokens}
        self.max_think_lines = args.max_think_lines
        self.forced: deque[int] = deque()
        self.gates: dict[str, str] = {}
        self.evidence_offset = args.evidence_offset
        self.evidence: float | None = None  # the gate prior (gate_prior.py), set once the prompt's question is scored
        self.phase, self.text, self.num_free, self.num_lines, self.line_open = FREE, "", 0, 0, False
        self.quote = Quote(args.quote, grammar.piece) if args.quote is not None else None
        if self.mode == "format":
            self._force(grammar.tag_ids("<think>"), THINK)

    def copy(self) -> "GateState":
        """An independent state at the same point (it shares the grammar)."""
        other = copy.copy(self)
        other.forced, other.gates = deque(self.forced), dict(self.gates)  # the rest is immutable or never changes
        other.quote = self.quote.copy() if self.quote is not None else None
        return other

    @property
    def done(self) -> bool:
        return self.phase == DONE and not self.forced

    def _force(self, ids: list[int], then: str) -> None:
        self.forced.extend(ids)
        self.phase, self.text, self.num_free, self.num_lines, self.line_open = then, "", 0, 0, False

    @property
    def quoting(self) -> bool:
        """The next token is copied from the section (chosen, or forced where only one place matches); a section
        without a sentence to quote leaves the thought free."""
        return self.quote is not None and not self.quote.ended and self.phase == THINK and not self.forced

    def next_mask(self) -> tuple[int | tuple[int, ...], int]:
        """(mask row, or the allowed ids of a quote's choice; forced token id or -1) for the next token."""
        if self.forced:
            return ANY, self.forced[0]
        if self.quoting:
            choices = self.quote.choices()
            return (ANY, choices[0]) if len(choices) == 1 else (choices, -1)
        if self.phase == CHECK:
            return CHECK_CHOICE, -1
        if self.phase == NEXT:
            return NEXT_CHOICE, -1
        if self.mode == "gates":
            return ANY, -1
        return (NO_EOS if self.text.strip() else TEXT_START), -1

    @property
    def choosing(self) -> str | None:
        """The gate whose value the next token chooses, if any."""
        return None if self.forced or self.phase not in (CHECK, NEXT) else self.phase

    def observe(self, token_id: int) -> int:
        """Advances on the token just emitted; returns its TokenRole."""
        if self.forced:
            assert token_id == self.forced[0]
            self.forced.popleft()
            return TokenRole.FORCED
        if self.phase in (CHECK, NEXT):
            self._choose(token_id)
            return TokenRole.CHOICE
        if self.quoting:
            return self._quote_token(token_id)
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
            self._force(tag_ids("</check>", "\n<update>\n", "</update>", "\n<next>"), NEXT)
        elif gate == CHECK:
            self._force(tag_ids("</check>", "\n<update>\n"), UPDATE)
        else:
            self._force(tag_ids("</next>") + [self.grammar.eos_token_id], DONE)

    def _free_token(self, token_id: int) -> None:
        piece = self.grammar.piece(token_id)
        self.text = (self.text + piece)[-32:]
        self.num_free += 1
        self._count_lines(piece)
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
        elif self.phase == THINK and self.max_think_lines is not None and self.num_lines >= self.max_think_lines:
            self._close_free_phase(write_closing=True)

    def _quote_token(self, token_id: int) -> int:
        forced = len(self.quote.choices()) == 1
        self.quote.advance(token_id)
        self.num_free += 1
        if self.quote.ended:  # the sentence is copied: its line ends, and so does the thought
            newline = [] if "\n" in self.grammar.piece(token_id) else self.grammar.newline_ids
            self._force(newline + self.grammar.tag_ids("</think>", "\n<check>"), CHECK)
        elif self.caps[THINK] is not None and self.num_free >= self.caps[THINK]:
            self._close_free_phase(write_closing=True)
        return TokenRole.FORCED if forced else TokenRole.SAMPLED

    def _count_lines(self, piece: str) -> None:
        """Lines with text that a line break has ended (blank lines do not count)."""
        *ended, rest = piece.split("\n")
        for segment in ended:
            self.num_lines += self.line_open or bool(segment.strip())
            self.line_open = False
        self.line_open = self.line_open or bool(rest.strip())

    def _close_free_phase(self, write_closing: bool) -> None:
        closing, opening, then = ("</think>", "\n<check>", CHECK) if self.phase == THINK else ("</update>", "\n<next>", NEXT)
        self._force(self.grammar.tag_ids(*((closing,) if write_closing else ()), opening), then)


def replay_mask_rows(grammar: GateGrammar, args: FormatArgs, output_ids: list[int], roles: list[int]) -> list[int]:
    """The mask-table row applied before each output token, from a fresh run of the state machine; raises when the
    turn's forced tokens show it was not decoded under these args."""
    state = GateState(grammar, args)
    rows = []
    for token_id, role in zip(output_ids, roles):
        row, forced = state.next_mask()
        if (forced >= 0) != (role == TokenRole.FORCED) or (forced >= 0 and forced != token_id):
            raise ValueError("the turn was not decoded under this constraint: its forced tokens differ on replay")
        rows.append(row)
        state.observe(token_id)
    return rows


def thought_ids(grammar: GateGrammar, args: FormatArgs, output_ids: list[int]) -> list[int]:
    """The ids of a turn's thought as the model wrote (or copied) them: after the forced <think>, before the tags
    that close it."""
    state, thought = GateState(grammar, args), []
    for token_id in output_ids:
        _, forced = state.next_mask()
        if state.phase != THINK:
            break
        if forced < 0 or state.quoting:
            thought.append(token_id)
        state.observe(token_id)
    return thought
