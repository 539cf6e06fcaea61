"""The turn-format state machine and its logits processor (masks, forced tags, the gate prior's bias, forks), with
tag ids from the real SmolLM2 tokenizer."""
import pytest
import torch

from grumem.agent.turn_format import (ANY, CHECK_CHOICE, NEXT_CHOICE, NO_EOS, TEXT_START, FormatArgs, GateGrammar,
                                      GateState)
from grumem.agent import TurnFormat
from grumem.engine import SamplingParams, TokenRole


@pytest.fixture(scope="module")
def grammar(tokenizer):
    return GateGrammar(tokenizer)


def feed(state: GateState, grammar: GateGrammar, text: str) -> None:
    for token_id in grammar.tokenizer.encode(text, add_special_tokens=False):
        assert state.next_mask()[1] == -1  # free text: nothing forced
        state.observe(token_id)


def drain_forced(state: GateState) -> list[int]:
    forced = []
    while state.next_mask()[1] >= 0:
        token_id = state.next_mask()[1]
        assert state.observe(token_id) == TokenRole.FORCED
        forced.append(token_id)
    return forced


def test_tag_ids_come_from_the_tokenizer(grammar):
    tok = grammar.tokenizer
    assert tok.decode(grammar.ids["</think>"]) == "</think>"
    assert tok.decode(grammar.ids["\n<check>"]) == "\n<check>"
    assert all(len(ids) == 1 for ids in grammar.options["check"].values())  # yes / no are single tokens here
    allowed = grammar.mask_table[CHECK_CHOICE].nonzero().flatten().tolist()
    assert sorted(allowed) == sorted(ids[0] for ids in grammar.options["check"].values())
    assert not grammar.mask_table[NO_EOS, tok.eos_token_id] and grammar.mask_table[ANY].all()
    text_start = grammar.mask_table[TEXT_START]
    assert not text_start[grammar.ids["</think>"][0]] and not text_start[tok.eos_token_id]
    assert text_start[tok.encode("The", add_special_tokens=False)[0]]


def test_full_format_walk(grammar):
    tok = grammar.tokenizer
    state = GateState(grammar, FormatArgs("format", max_think_tokens=None, max_memory_tokens=None))
    assert tok.decode(drain_forced(state)) == "<think>"
    assert state.next_mask() == (TEXT_START, -1)  # no tag before some text
    feed(state, grammar, "\n")
    assert state.next_mask() == (TEXT_START, -1)
    feed(state, grammar, "the needle is here")
    assert state.next_mask() == (NO_EOS, -1)
    feed(state, grammar, "</think>")
    assert tok.decode(drain_forced(state)) == "\n<check>"
    assert state.next_mask() == (CHECK_CHOICE, -1)
    assert state.observe(grammar.options["check"]["yes"][0]) == TokenRole.CHOICE
    assert tok.decode(drain_forced(state)) == "</check>\n<update>\n"
    feed(state, grammar, "needle = 42</update>")
    assert tok.decode(drain_forced(state)) == "\n<next>"
    assert state.next_mask() == (NEXT_CHOICE, -1)
    state.observe(grammar.options["next"]["end"][0])
    assert tok.decode(drain_forced(state)) == "</next><|im_end|>"
    assert state.done and state.gates == {"check": "yes", "next": "end"}


def test_check_no_forces_an_empty_update(grammar):
    state = GateState(grammar, FormatArgs("format", max_think_tokens=None, max_memory_tokens=None))
    drain_forced(state)
    feed(state, grammar, "nothing</think>")
    drain_forced(state)
    state.observe(grammar.options["check"]["no"][0])
    assert grammar.tokenizer.decode(drain_forced(state)) == "</check>\n<update>\n</update>\n<next>"
    assert state.next_mask() == (NEXT_CHOICE, -1)


def test_caps_force_the_closing_tags(grammar):
    tok = grammar.tokenizer
    state = GateState(grammar, FormatArgs("format", max_think_tokens=3, max_memory_tokens=2))
    drain_forced(state)
    feed(state, grammar, " a b c")  # three tokens: the cap
    assert tok.decode(drain_forced(state)) == "</think>\n<check>"
    state.observe(grammar.options["check"]["yes"][0])
    drain_forced(state)
    feed(state, grammar, " x y")
    assert tok.decode(drain_forced(state)) == "</update>\n<next>"


def test_gates_mode_only_constrains_gate_values(grammar):
    tok = grammar.tokenizer
    state = GateState(grammar, FormatArgs("gates", max_think_tokens=None, max_memory_tokens=None))
    assert state.next_mask() == (ANY, -1)  # free text, end of turn allowed
    feed(state, grammar, "I think so. <check>")
    assert state.next_mask() == (CHECK_CHOICE, -1)
    state.observe(grammar.options["check"]["no"][0])
    assert tok.decode(drain_forced(state)) == "</check>"
    feed(state, grammar, " fine <next>")
    state.observe(grammar.options["next"]["continue"][0])
    assert tok.decode(drain_forced(state)) == "</next>"
    assert state.gates == {"check": "no", "next": "continue"} and not state.done


def test_think_line_cap_closes_after_the_first_line_with_text(grammar):
    tok = grammar.tokenizer
    state = GateState(grammar, FormatArgs("format", max_think_tokens=None, max_memory_tokens=None, max_think_lines=1))
    drain_forced(state)
    feed(state, grammar, "\n\nThe needle is 42.")  # leading blank lines are not a line of thought
    assert state.next_mask() == (NO_EOS, -1)
    feed(state, grammar, "\n")
    assert tok.decode(drain_forced(state)) == "</think>\n<check>"


@pytest.fixture(scope="module")
def turn_format(tokenizer):
    return TurnFormat(tokenizer)


def prior_state(turn_format: TurnFormat, question_logprob: float) -> GateState:
    """A state whose gate prior saw the question at this logprob (offset 0): evidence = question_logprob."""
    state = turn_format.new_state(FormatArgs(evidence_offset=0.0), SamplingParams(prompt_logprobs=(1, 2)))
    turn_format.observe_prompt_logprobs(state, [question_logprob])
    return state


def applied(turn_format: TurnFormat, state: GateState) -> tuple[torch.Tensor, int]:
    """The processor on zero logits: (the row it leaves, the token it forces or -1)."""
    logits, forced = turn_format.apply(torch.zeros(2, len(turn_format.grammar.pieces)), [None, state])
    assert torch.equal(logits[0], torch.zeros_like(logits[0])) and forced[0] == -1  # a row it does not own
    return logits[1], forced[1]


def test_prior_bias_favours_yes_and_end_only_at_the_gates(turn_format):
    grammar, state = turn_format.grammar, prior_state(turn_format, 7.5)
    yes, no = grammar.options["check"]["yes"][0], grammar.options["check"]["no"][0]
    logits, forced = applied(turn_format, state)
    assert forced == grammar.ids["<think>"][0] and not logits.any()  # a forced tag: no bias, no mask
    drain_forced(state)
    feed(state, grammar, "x</think>")
    drain_forced(state)
    logits, forced = applied(turn_format, state)
    assert forced == -1 and (logits[yes], logits[no]) == (7.5, 0.0)
    assert torch.isinf(logits).sum() == logits.numel() - 2  # only the two options are allowed
    state.observe(yes)
    drain_forced(state)
    feed(state, grammar, "m</update>")
    drain_forced(state)
    logits, _ = applied(turn_format, state)
    end, cont = grammar.options["next"]["end"][0], grammar.options["next"]["continue"][0]
    assert (logits[end], logits[cont]) == (7.5, 0.0)


def test_prior_bias_discourages_ending_after_no(turn_format):
    grammar, state = turn_format.grammar, prior_state(turn_format, 3.0)
    drain_forced(state)
    feed(state, grammar, "x</think>")
    drain_forced(state)
    state.observe(grammar.options["check"]["no"][0])
    drain_forced(state)
    logits, _ = applied(turn_format, state)
    assert logits[grammar.options["next"]["end"][0]] == -3.0


def test_fork_copies_an_independent_state(turn_format):
    grammar, parent = turn_format.grammar, prior_state(turn_format, 2.0)
    drain_forced(parent)
    child = turn_format.fork(parent)
    feed(child, grammar, "x</think>")
    drain_forced(child)
    child.observe(grammar.options["check"]["yes"][0])
    assert child.gates == {"check": "yes"} and parent.gates == {} and parent.phase != child.phase
    assert child.evidence == parent.evidence == 2.0 and child.grammar is parent.grammar


def test_bad_format_args_are_rejected(turn_format):
    with pytest.raises(ValueError, match="format mode"):
        turn_format.new_state({"mode": "json"}, SamplingParams())
    with pytest.raises(ValueError, match="max_think_tokens must be >= 1"):
        FormatArgs(max_think_tokens=0)
    with pytest.raises(ValueError, match="needs prompt_logprobs"):
        turn_format.new_state(FormatArgs(evidence_offset=1.0), SamplingParams())
