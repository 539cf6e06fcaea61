"""Labelled turns (what the loop should write, from the evidence spans) and the warm start that trains on them: the
turns decode under the format's own state machine, carry the labels' gates and memories into the next prompt, and a
few steps raise the model's own gate accuracy (and a learning rate of 1e-9 does not)."""
import itertools
from dataclasses import replace

import pytest
import torch

from grumem.agent import AgentConfig, MemoryAgent
from grumem.agent.parsing import parse_turn
from grumem.agent.turn_format import replay_mask_rows
from grumem.engine import LLM, SamplingParams, TokenRole
from grumem.tasks import chunk_document, make_samples
from grumem.tasks.chunking import span_chunks
from grumem.tasks.hard_niah import training_stream
from grumem.trainer import Policy
from grumem.trainer.labelled_turns import TurnLabel, closest_sentence, labelled_rows
from grumem.trainer.warm_start import WarmStart, WarmStartConfig

AGENT = AgentConfig(layout="paper", gate_prior_threshold=None, chunk_tokens=256, memory_tokens=96,
                    max_think_tokens=40, answer_tokens=32)


def unambiguous(samples, chunk_tokens):
    return [s for s in samples if all(len(span_chunks(a, b, chunk_tokens)) == 1
                                      for a, b in s.evidence_spans + s.distractor_spans)]


@pytest.fixture
def llm(tiny_llama_path):
    return LLM(tiny_llama_path, num_kvcache_blocks=512)


def test_labelled_turns_replay_under_the_format_and_feed_the_next_prompt(llm):
    agent = MemoryAgent(llm, AGENT)
    grammar, prompts = agent.turn_format.grammar, agent.prompts
    samples = unambiguous(make_samples("niah_two_needles", llm.tokenizer, 1024, 6)
                          + make_samples("niah_distractor", llm.tokenizer, 1024, 6), AGENT.chunk_tokens)
    assert len(samples) >= 6
    for sample in samples:
        rows = labelled_rows(sample, AGENT, prompts, grammar, after_exit=True)
        evidence, chunks = sample.evidence_chunks(AGENT.chunk_tokens), chunk_document(sample.context_ids, 256)
        memory_rows, answer_row = rows[:-1], rows[-1]
        assert len(memory_rows) == min(len(chunks), evidence[-1] + 2)
        problem, memory = prompts.encode(sample.question), prompts.no_memory_ids
        for k, row in enumerate(memory_rows):
            assert row.prompt_ids == prompts.memory_prompt(problem, memory, chunks[k])  # the memory as written
            roles = [TokenRole.SAMPLED if keep else TokenRole.FORCED for keep in row.loss_mask]
            assert replay_mask_rows(grammar, AGENT.memory_format, row.output_ids, roles) == row.mask_rows
            turn = parse_turn(row.output_ids, grammar.piece)
            assert turn.well_formed
            assert turn.check == ("yes" if k in evidence else "no")
            assert turn.next == ("end" if k >= evidence[-1] else "continue")
            text = llm.tokenizer.decode(row.output_ids)
            if k in evidence:
                memory = turn.memory_ids
                read = [llm.tokenizer.decode(sample.context_ids[a:b]).strip() for a, b in sample.evidence_spans
                        if span_chunks(a, b, 256)[0] <= k]
                assert llm.tokenizer.decode(memory) == " ".join(read)
            elif k in sample.distractor_chunks(256):  # the distractor is quoted, then rejected
                decoys = [llm.tokenizer.decode(sample.context_ids[a:b]).strip() for a, b in sample.distractor_spans]
                assert any(text.startswith(f"<think>{d[:20]}") for d in decoys)
            else:  # some sentence of the chunk is quoted, then rejected
                assert text.split("</think>")[0][len("<think>"):][:20] in llm.tokenizer.decode(chunks[k])
        assert answer_row.prompt_ids == prompts.answer_prompt(problem, memory)
        assert answer_row.output_ids[-1] == llm.eos_token_id and answer_row.mask_rows is None
        assert llm.tokenizer.decode(answer_row.output_ids[:-1]) == "\\boxed{" + ", ".join(sample.answers) + "}"


def test_the_closest_sentence_shares_the_most_words_with_the_question(tokenizer):
    chunk = tokenizer.encode("The sky is blue. The vault code is secret here! nothing else.", add_special_tokens=False)
    closest = lambda question: tokenizer.decode(chunk[slice(*closest_sentence(chunk, question, tokenizer.decode))])  # noqa: E731
    assert closest("What is the vault code?") == " The vault code is secret here!"
    assert closest("Unrelated?") == "The sky is blue."


def test_documents_whose_gates_have_no_single_label_are_refused(llm):
    agent = MemoryAgent(llm, AGENT)
    sample = make_samples("niah_single_2", llm.tokenizer, 1024, 1)[0]
    start = sample.evidence_spans[0][0]
    straddling = sample.__class__(**{**{f: getattr(sample, f) for f in sample.__slots__},
                                     "context_ids": sample.context_ids[start - 250:] + sample.context_ids[:start - 250],
                                     "evidence_spans": [(250, 250 + sample.evidence_spans[0][1] - start)]})
    assert len(span_chunks(*straddling.evidence_spans[0], 256)) == 2
    with pytest.raises(ValueError, match="straddles"):
        labelled_rows(straddling, AGENT, agent.prompts, agent.turn_format.grammar)
    unlabelled = sample.__class__(**{**{f: getattr(sample, f) for f in sample.__slots__}, "evidence_spans": []})
    with pytest.raises(ValueError, match="no evidence spans"):
        labelled_rows(unlabelled, AGENT, agent.prompts, agent.turn_format.grammar)
    with pytest.raises(ValueError, match="full turn format"):
        labelled_rows(sample, AgentConfig(constraint="gates", gate_prior_threshold=None), agent.prompts,
                      agent.turn_format.grammar)


def test_a_warm_start_that_can_label_nothing_stops_with_a_clear_error(llm, tiny_llama_path):
    tiny_chunks = AgentConfig(layout="paper", gate_prior_threshold=None, chunk_tokens=4, memory_tokens=8,
                              max_think_tokens=4, answer_tokens=4)  # every needle crosses a chunk boundary
    trainer = WarmStart(llm, Policy(tiny_llama_path), tiny_chunks, WarmStartConfig(documents_per_step=1))
    with pytest.raises(ValueError, match="no single label .* raise the chunk size"):
        trainer.rows(training_stream(llm.tokenizer, 256, seed=3))
    unformatted = AgentConfig(layout="paper", gate_prior_threshold=None, constraint="gates")
    with pytest.raises(ValueError, match="full turn format"):
        WarmStart(llm, Policy(tiny_llama_path), unformatted).rows(training_stream(llm.tokenizer, 256, seed=3))


def gate_accuracy(trainer, rows) -> float:
    stats = trainer.backward(rows)
    trainer.optimizer.zero_grad(set_to_none=True)
    return stats["gate_acc"]


@pytest.mark.parametrize("lr, learns, thinks, think", [
    (3e-3, True, "labelled", "free"), (1e-9, False, "labelled", "free"), (3e-3, True, "own", "free"),
    (3e-3, True, "labelled", "quote")])
def test_a_few_warm_start_steps_raise_the_models_own_gate_accuracy(llm, tiny_llama_path, lr, learns, thinks, think):
    documents = list(itertools.islice(training_stream(llm.tokenizer, 768, seed=1), 2))
    policy = Policy(tiny_llama_path)
    trainer = WarmStart(llm, policy, replace(AGENT, think=think),
                        WarmStartConfig(documents_per_step=2, lr=lr, gate_weight=4.0, thinks=thinks))
    rows = trainer.rows(iter(documents))
    if thinks == "own":  # the thoughts are the served model's own, and carry no loss
        grammar = trainer.agent.turn_format.grammar
        opening = len(grammar.tag_ids("<think>"))
        memory_rows = [r for r in rows if r.mask_rows is not None]
        labels = [TurnLabel(r.prompt_ids, AGENT.memory_format, [], "no", [], "continue") for r in memory_rows]
        for row, think in zip(memory_rows, trainer.own_thinks(labels)):
            assert row.output_ids[opening:opening + len(think)] == think
            assert not any(row.loss_mask[:opening + len(think)])
    if think == "quote":  # the quotes' choices are trained as decisions, the gates' accuracy apart
        assert trainer.backward(rows)["quote_acc"] is not None
        trainer.optimizer.zero_grad(set_to_none=True)
    before = gate_accuracy(trainer, rows)
    weights = {n: p.detach().clone() for n, p in policy.model.named_parameters()}
    for _ in range(6):
        trainer.step(itertools.cycle(documents))
    after = gate_accuracy(trainer, rows)
    changed = max((p - weights[n]).abs().max() for n, p in policy.model.named_parameters())
    if learns:
        assert after == 1.0 and before < 1.0
    else:
        assert after == before and changed < 1e-6
    # the engine serves exactly the trained weights: its logprobs of a labelled turn are the policy's
    assert_engine_serves(llm, policy, rows[1])


def assert_engine_serves(llm, policy, row) -> None:
    """The engine's logprobs of a row's output (unconstrained, scored as a prompt) equal the policy's."""
    span = (len(row.prompt_ids), row.num_tokens)
    [out] = llm.generate([row.prompt_ids + row.output_ids], SamplingParams(temperature=0, max_tokens=1,
                                                                          prompt_logprobs=span))
    row = replace(row, loss_mask=[True] * len(row.output_ids), mask_rows=None)
    with torch.no_grad():
        expected = policy.token_logprobs([row], 1.0)
    torch.testing.assert_close(torch.tensor(out.prompt_logprobs), expected, atol=2e-4, rtol=1e-4)
