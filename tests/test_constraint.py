"""The gate-format state machine, with tag ids computed from the real SmolLM2 tokenizer."""
import pytest

from grumem.engine.constraint import ANY, CHECK_CHOICE, NEXT_CHOICE, NO_EOS, TEXT_START, GateGrammar, GateState
from grumem.engine.sequence import TokenRole


@pytest.fixture(scope="module")
def grammar(tokenizer):
    return GateGrammar(tokenizer)


def feed(state: GateState, grammar: GateGrammar, text: str) -> None:
    for token_id in grammar.tokenizer.encode(text, add_special_tokens=False):
        assert state.next_mask() == (state.next_mask()[0], -1)  # free text: nothing forced
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
    state = GateState(grammar, "format", max_think_tokens=None, max_memory_tokens=None)
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
    state = GateState(grammar, "format", max_think_tokens=None, max_memory_tokens=None)
    drain_forced(state)
    feed(state, grammar, "nothing</think>")
    drain_forced(state)
    state.observe(grammar.options["check"]["no"][0])
    assert grammar.tokenizer.decode(drain_forced(state)) == "</check>\n<update>\n</update>\n<next>"
    assert state.next_mask() == (NEXT_CHOICE, -1)


def test_caps_force_the_closing_tags(grammar):
    tok = grammar.tokenizer
    state = GateState(grammar, "format", max_think_tokens=3, max_memory_tokens=2)
    drain_forced(state)
    feed(state, grammar, " a b c")  # three tokens: the cap
    assert tok.decode(drain_forced(state)) == "</think>\n<check>"
    state.observe(grammar.options["check"]["yes"][0])
    drain_forced(state)
    feed(state, grammar, " x y")
    assert tok.decode(drain_forced(state)) == "</update>\n<next>"


def test_gates_mode_only_constrains_gate_values(grammar):
    tok = grammar.tokenizer
    state = GateState(grammar, "gates", max_think_tokens=None, max_memory_tokens=None)
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
    state = GateState(grammar, "format", max_think_tokens=None, max_memory_tokens=None, max_think_lines=1)
    drain_forced(state)
    feed(state, grammar, "\n\nThe needle is 42.")  # leading blank lines are not a line of thought
    assert state.next_mask() == (NO_EOS, -1)
    feed(state, grammar, "\n")
    assert tok.decode(drain_forced(state)) == "</think>\n<check>"


def test_choice_bias_favours_yes_and_end_only_at_the_gates(grammar):
    state = GateState(grammar, "format", max_think_tokens=None, max_memory_tokens=None)
    state.evidence = 7.5
    assert state.choice_bias() is None  # forced <think>
    drain_forced(state)
    feed(state, grammar, "x</think>")
    assert state.choice_bias() is None  # forced \n<check>
    drain_forced(state)
    assert state.choice_bias() == (grammar.options["check"]["yes"][0], 7.5)
    state.observe(grammar.options["check"]["yes"][0])
    drain_forced(state)
    feed(state, grammar, "m</update>")
    drain_forced(state)
    assert state.choice_bias() == (grammar.options["next"]["end"][0], 7.5)


def test_choice_bias_discourages_ending_after_no(grammar):
    state = GateState(grammar, "format", max_think_tokens=None, max_memory_tokens=None)
    state.evidence = 3.0
    drain_forced(state)
    feed(state, grammar, "x</think>")
    drain_forced(state)
    state.observe(grammar.options["check"]["no"][0])
    drain_forced(state)
    assert state.choice_bias() == (grammar.options["next"]["end"][0], -3.0)
