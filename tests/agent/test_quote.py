"""Quoted thoughts (agent/quote.py): the state machine copies one sentence of the section, the engine decodes only
such quotes (a random-weight model, sampled, batched beside a free-thought request), and the labelled turns and the
trainer's replay agree with what the engine wrote."""
import pytest

from grumem.agent import FormatArgs, TurnFormat
from grumem.agent.parsing import parse_turn
from grumem.agent.quote import Quote, sentence_spans
from grumem.agent.turn_format import GateGrammar, GateState, replay_mask_rows, thought_ids
from grumem.engine import LLM, SamplingParams, TokenRole
from grumem.trainer.labelled_turns import write_turn

SECTION = ("It rained all day. The magic number for quiet-lake is: 4417. The magic word is near! The sun is out.\n"
           "no stop here\nnothing ends here")


@pytest.fixture(scope="module")
def grammar(tokenizer):
    return GateGrammar(tokenizer)


def encode(tokenizer, text):
    return tokenizer.encode(text, add_special_tokens=False)


def sentences(tokenizer, ids):
    return [tokenizer.decode(ids[a:b]) for a, b in sentence_spans(ids, lambda i: tokenizer.decode([i]))]


def test_sentences_end_at_stops_and_line_breaks_and_keep_only_text(tokenizer):
    ids = encode(tokenizer, SECTION + "\n\n")
    assert [s.strip() for s in sentences(tokenizer, ids)] == [
        "It rained all day.", "The magic number for quiet-lake is: 4417.", "The magic word is near!",
        "The sun is out.", "no stop here", "nothing ends here"]


def test_the_quote_chooses_a_start_and_is_forced_once_one_place_matches(grammar, tokenizer):
    section = encode(tokenizer, SECTION)
    state = GateState(grammar, FormatArgs(max_think_tokens=40, quote=tuple(section)))
    while state.next_mask()[1] >= 0 and not state.quoting:
        state.observe(state.next_mask()[1])  # <think>
    starts = {section[a] for a, _ in sentence_spans(section, grammar.piece)}
    row, forced = state.next_mask()
    assert forced == -1 and set(row) == starts
    the = encode(tokenizer, " The")[0]
    assert state.observe(the) == TokenRole.SAMPLED  # three sentences start with " The": still a choice
    row, forced = state.next_mask()
    assert forced == -1 and set(tokenizer.decode([t]) for t in row) == {" magic", " sun"}
    assert state.observe(encode(tokenizer, " magic")[0]) == TokenRole.SAMPLED
    row, forced = state.next_mask()
    assert forced == -1 and set(tokenizer.decode([t]) for t in row) == {" number", " word"}
    assert state.observe(encode(tokenizer, " word")[0]) == TokenRole.SAMPLED
    copied = []
    while state.quoting:  # " is near!" is the one place left: forced
        forced = state.next_mask()[1]
        assert forced >= 0 and state.observe(forced) == TokenRole.FORCED
        copied.append(forced)
    assert tokenizer.decode(copied) == " is near!"
    closing = []
    while state.next_mask()[1] >= 0:
        closing.append(state.next_mask()[1])
        state.observe(closing[-1])
    assert tokenizer.decode(closing) == "\n</think>\n<check>"


def test_a_quote_longer_than_the_cap_is_cut_there(grammar, tokenizer):
    section = encode(tokenizer, "one two three four five six seven eight nine ten.")
    args = FormatArgs(max_think_tokens=4, quote=tuple(section))
    ids, roles, _ = write_turn(grammar, args, section, "no", [], "continue")
    assert tokenizer.decode(ids).startswith("<think>one two three four</think>\n<check>no")
    assert thought_ids(grammar, args, ids) == section[:4]


def test_a_quote_outside_the_full_format_is_refused():
    with pytest.raises(ValueError, match="needs format mode 'format'"):
        FormatArgs(mode="gates", quote=(1, 2, 3))


def test_a_section_without_a_sentence_leaves_the_thought_free(grammar, tokenizer):
    state = GateState(grammar, FormatArgs(max_think_tokens=8, quote=tuple(encode(tokenizer, " ... !\n"))))
    while state.next_mask()[1] >= 0:
        state.observe(state.next_mask()[1])  # <think>
    assert not state.quoting and state.phase == "think"


def test_copies_of_a_quote_advance_apart(tokenizer):
    section = encode(tokenizer, SECTION)
    quote = Quote(section, lambda i: tokenizer.decode([i]))
    quote.advance(encode(tokenizer, " The")[0])
    other = quote.copy()
    other.advance(encode(tokenizer, " sun")[0])
    assert [tokenizer.decode([t]) for t in other.choices()] == [" is"]
    assert {tokenizer.decode([t]) for t in quote.choices()} == {" magic", " sun"}


def test_labelled_quotes_must_be_sentences_of_the_section(grammar, tokenizer):
    section = encode(tokenizer, SECTION)
    args = FormatArgs(max_think_tokens=40, quote=tuple(section))
    with pytest.raises(ValueError, match="not a sentence of the section"):
        write_turn(grammar, args, encode(tokenizer, " The magic number is 12."), "yes", [5], "end")


def test_the_engine_decodes_only_quotes_of_each_requests_section(tiny_llama_path):
    llm = LLM(tiny_llama_path, num_kvcache_blocks=256)
    grammar = TurnFormat.of(llm).grammar
    tokenizer = llm.tokenizer
    sections = [encode(tokenizer, SECTION), encode(tokenizer, "Birds fly south. Fish swim in the sea. Cats nap.")]
    quoted = [FormatArgs(max_think_tokens=24, max_memory_tokens=8, quote=tuple(s)) for s in sections]
    free = FormatArgs(max_think_tokens=24, max_memory_tokens=8)
    params = [SamplingParams(temperature=1.0, max_tokens=80, seed=seed, logits_processors={TurnFormat.name: args})
              for seed, args in enumerate(quoted * 3 + [free])]
    prompts = [section + encode(tokenizer, " Quote one.") for section in sections * 3 + [sections[0]]]
    outputs = llm.generate(prompts, params)
    for output, p in zip(outputs, params):
        args, completion = p.logits_processors[TurnFormat.name], output.outputs[0]
        assert completion.finish_reason == "stop" and parse_turn(completion.token_ids, grammar.piece).well_formed
        assert replay_mask_rows(grammar, args, completion.token_ids, completion.roles)  # the trainer's replay agrees
        if args.quote is None:
            continue
        thought = tokenizer.decode(thought_ids(grammar, args, completion.token_ids))
        assert thought in sentences(tokenizer, list(args.quote)), thought
    assert len({tokenizer.decode(thought_ids(grammar, p.logits_processors[TurnFormat.name], o.outputs[0].token_ids))
                for o, p in zip(outputs[:6], params[:6])}) > 1  # sampled: not all one quote
