"""The memory loop's logic on a scripted engine (exact control of every turn), then end to end on SmolLM2."""
import re

import pytest

from grumem.engine import AgentConfig, MemoryAgent, SamplingParams
from grumem.engine.constraint import GateGrammar
from grumem.engine.outputs import CompletionOutput, RequestOutput
from grumem.engine.sequence import TokenRole
from grumem.tasks import Sample, make_samples


class ScriptedLLM:
    """Stands in for the engine: each memory turn's output comes from `script(chunk_text, memory_text)`; a scored
    question gets a logprob of -1 per token after a section holding CHUNK1, -2 after an empty one, else -3."""

    def __init__(self, tokenizer, script):
        self.tokenizer, self.script = tokenizer, script
        self.grammar = GateGrammar(tokenizer)
        self.eos_token_id = tokenizer.eos_token_id
        self.queue, self.prompts, self.params, self.pins = [], [], [], []

    def add_request(self, prompt_ids, params: SamplingParams, request_id=None, priority=0):
        request_id = f"r{len(self.prompts)}"
        self.prompts.append(prompt_ids)
        self.params.append(params)
        self.queue.append((request_id, prompt_ids, params))
        return request_id

    def step(self):
        outputs, self.queue = [self._answer(*item) for item in self.queue], []
        return outputs

    def _answer(self, request_id, prompt_ids, params):
        text = self.tokenizer.decode(prompt_ids)
        chunk = re.search(r"<section>\n(.*?)\n</section>", text, re.S)
        chunk = chunk.group(1) if chunk else None
        scores = None
        if params.prompt_logprobs:
            start, end = params.prompt_logprobs
            scores = [-2.0 if not chunk.strip() else -1.0 if "CHUNK1" in chunk else -3.0] * (end - start)
        memory = re.search(r"<memory>\n(.*?)\n</memory>", text, re.S)
        reply = self.script(chunk, memory.group(1)) if memory else "."  # no memory: the prior's baseline
        ids = self.tokenizer.encode(reply, add_special_tokens=False) + [self.eos_token_id]
        completions = [CompletionOutput(i, ids, [0.0] * len(ids), [TokenRole.SAMPLED] * len(ids), "stop")
                       for i in range(params.n)]
        return RequestOutput(request_id, prompt_ids, completions, prompt_logprobs=scores)

    def pin_prefix(self, ids):
        self.pins.append(ids)
        return [len(self.pins)]

    def unpin(self, block_ids):
        self.pins.pop()


def turn(check: str, update: str, nxt: str) -> str:
    return f"<think>t</think>\n<check>{check}</check>\n<update>{update}</update>\n<next>{nxt}</next>"


def three_chunk_sample(tokenizer, chunk_tokens: int = 8) -> Sample:
    ids = []
    for i in range(3):  # each chunk reads "CHUNKi" padded to chunk_tokens tokens
        piece = tokenizer.encode(f"CHUNK{i}", add_special_tokens=False)
        ids += piece + tokenizer.encode(" x", add_special_tokens=False) * (chunk_tokens - len(piece))
    return Sample("test", 0, ids, "Which chunk?", ["CHUNK1"], [(chunk_tokens, 2 * chunk_tokens)], "sub_em")


def scripted(chunk, memory):
    if chunk is None:
        return f"The answer is \\boxed{{{memory}}}"
    if chunk.startswith("CHUNK0"):
        return turn("yes", "MEM-A", "continue")
    if chunk.startswith("CHUNK1"):
        return turn("no", "MEM-B", "end")
    return turn("yes", "MEM-C", "continue")


def run(tokenizer, script, **config):
    llm = ScriptedLLM(tokenizer, script)
    agent = MemoryAgent(llm, AgentConfig(chunk_tokens=8, **config))
    return llm, agent.run([three_chunk_sample(tokenizer)])[0]


def test_check_no_keeps_the_memory_and_exit_gate_stops(tokenizer):
    llm, traj = run(tokenizer, scripted)
    assert [t.chunk_index for t in traj.turns] == [0, 1, -1]  # end at chunk 1, then the answer turn
    assert traj.stop_chunk == 1 and traj.answer == "MEM-A"  # chunk 1 said no: MEM-B was discarded
    assert [t.check for t in traj.memory_turns] == ["yes", "no"]
    assert [t.has_evidence for t in traj.memory_turns] == [False, True]
    assert llm.pins == []  # the question prefix was pinned, and released at the end


def test_gate_prior_scores_the_question_against_an_empty_section(tokenizer):
    llm, traj = run(tokenizer, scripted, exit_gate=False, gate_prior_threshold=0.5)
    question = tokenizer.encode("Which chunk?", add_special_tokens=False)
    baseline, first_turn = llm.params[:2]
    assert llm.prompts[0][baseline.prompt_logprobs[0]:] == question  # the baseline ends with the question
    assert baseline.evidence_offset is None and baseline.max_tokens == 1
    start, end = first_turn.prompt_logprobs
    assert llm.prompts[1][start:end] == question
    assert first_turn.evidence_offset == pytest.approx(-2.0 * len(question) + 0.5)
    # log-likelihood ratios against the empty section, minus the threshold: only CHUNK1 is evidence
    expected = [-1.0 * len(question) - 0.5, 1.0 * len(question) - 0.5, -1.0 * len(question) - 0.5]
    assert [t.gate_prior for t in traj.memory_turns] == pytest.approx(expected)


def test_paper_layout_runs_without_the_prior(tokenizer):
    assert not AgentConfig(layout="paper").uses_gate_prior  # the question comes before the section there
    llm, traj = run(tokenizer, scripted, layout="paper")
    assert all(p.prompt_logprobs is None for p in llm.params)
    assert traj.answer == "MEM-A" and traj.memory_turns[0].gate_prior is None


def test_without_exit_gate_every_chunk_is_read(tokenizer):
    llm, traj = run(tokenizer, scripted, exit_gate=False)
    assert [t.chunk_index for t in traj.turns] == [0, 1, 2, -1]
    assert traj.answer == "MEM-C"


def test_next_prompt_holds_the_exact_memory_ids(tokenizer):
    llm, traj = run(tokenizer, scripted, exit_gate=False)
    first = traj.turns[0].output_ids
    memory_ids = first[first.index(tokenizer.encode("MEM", add_special_tokens=False)[0]):][:3]
    assert tokenizer.decode(memory_ids) == "MEM-A"
    second_prompt = traj.turns[1].prompt_ids
    assert any(second_prompt[i : i + len(memory_ids)] == memory_ids for i in range(len(second_prompt)))


def test_memagent_rewrites_every_turn_and_reads_every_chunk(tokenizer):
    llm, traj = run(tokenizer, lambda chunk, memory: f"saw {chunk[:6]}" if chunk else f"\\boxed{{{memory}}}",
                    mode="memagent")
    assert [t.chunk_index for t in traj.turns] == [0, 1, 2, -1]
    assert traj.answer == "saw CHUNK2"


def test_malformed_turn_keeps_memory_and_continues(tokenizer):
    script = lambda chunk, memory: ("blah" if chunk and chunk.startswith("CHUNK1") else  # noqa: E731
                                    scripted(chunk, memory) if chunk else f"\\boxed{{{memory}}}")
    llm, traj = run(tokenizer, script, exit_gate=False, constraint=None)
    assert [t.well_formed for t in traj.memory_turns] == [True, False, True]
    assert traj.answer == "MEM-C" and not traj.format_ok


def test_bad_documents_fail_alone(tokenizer):
    llm = ScriptedLLM(tokenizer, scripted)
    good = three_chunk_sample(tokenizer)
    empty = Sample("test", 1, [], "q?", ["x"], [], "sub_em")
    long_question = Sample("test", 2, good.context_ids, "why " * 40, ["x"], [], "sub_em")
    short = Sample("test", 3, good.context_ids[:5], "q?", ["x"], [], "sub_em")
    trajs = MemoryAgent(llm, AgentConfig(chunk_tokens=8)).run([good, empty, long_question, short])
    assert trajs[0].error is None and trajs[0].answer == "MEM-A"
    assert "empty document" in trajs[1].error
    assert "longer than the chunk budget" in trajs[2].error
    assert trajs[3].error is None and trajs[3].num_chunks == 1


# --- end to end on the real model ------------------------------------------------------------------------------
E2E = dict(chunk_tokens=160, memory_tokens=24, max_think_tokens=8, answer_tokens=16)


@pytest.fixture(scope="module")
def niah_samples(smollm2_llm):
    return make_samples("niah_single_2", smollm2_llm.tokenizer, 400, 2, seed=3)  # 3 chunks each


@pytest.mark.parametrize("mode, exit_gate", [("grumem", True), ("grumem", False), ("memagent", False)])
def test_end_to_end_every_mode(smollm2_llm, niah_samples, mode, exit_gate):
    trajs = MemoryAgent(smollm2_llm, AgentConfig(mode=mode, exit_gate=exit_gate, **E2E)).run(niah_samples)
    for traj in trajs:
        assert traj.error is None and traj.num_chunks == 3
        indices = [t.chunk_index for t in traj.turns]
        assert indices[-1] == -1 and indices[:-1] == list(range(traj.stop_chunk + 1))
        assert traj.score is not None and traj.answer
        if mode == "grumem":
            assert traj.format_ok  # the constraint guarantees the format
            assert all(t.check in ("yes", "no") and t.next in ("continue", "end") for t in traj.memory_turns)
        if not exit_gate:
            assert traj.stop_chunk == 2
    assert smollm2_llm.block_manager.num_free_blocks == smollm2_llm.model_runner.num_blocks  # pins released


def test_gate_prior_reads_to_the_needle_and_answers(smollm2_llm):
    """SmolLM2's gates are untrained; the gate prior (the question's likelihood after each section) finds the
    needle: no on every chunk without evidence, yes and exit on the needle's (last) chunk, and the answer comes from
    the memory written there. (A needle cut by a chunk boundary makes two evidence chunks.)"""
    samples = make_samples("niah_single_1", smollm2_llm.tokenizer, 1200, 3, seed=5)
    config = AgentConfig(chunk_tokens=300, memory_tokens=48, max_think_tokens=40, answer_tokens=32)
    for sample, traj in zip(samples, MemoryAgent(smollm2_llm, config).run(samples)):
        assert all(t.check == "no" for t in traj.memory_turns if not t.has_evidence)
        assert traj.stop_chunk == traj.evidence_chunks[-1] and traj.memory_turns[-1].check == "yes"
        assert traj.score == 1.0, (traj.answer, sample.answers)


def test_rollout_groups_fork_and_keep_exact_ids(smollm2_llm, niah_samples):
    agent = MemoryAgent(smollm2_llm, AgentConfig(exit_gate=False, **E2E))
    groups = agent.rollout(niah_samples, group_size=3, temperature=1.0, seed=1)
    assert [len(g) for g in groups] == [3, 3]
    for group in groups:
        assert len({tuple(t.turns[0].prompt_ids) for t in group}) == 1  # one first prompt, forked
        assert [t.group_index for t in group] == [0, 1, 2]
        for traj in group:
            for turn in traj.turns:
                assert len(turn.output_ids) == len(turn.logprobs) == len(turn.roles)
            for before, after in zip(traj.memory_turns, traj.turns[1:]):
                if before.check == "yes":
                    content = re.search(r"<update>(.*?)</update>", smollm2_llm.tokenizer.decode(before.output_ids), re.S)
                    assert content.group(1).strip() in smollm2_llm.tokenizer.decode(after.prompt_ids)


def test_model_that_never_writes_tags(smollm2_llm, niah_samples):
    """Unconstrained, the untrained model ignores the format: every turn is a format failure, nothing crashes."""
    agent = MemoryAgent(smollm2_llm, AgentConfig(exit_gate=False, constraint=None, **E2E))
    traj = agent.run(niah_samples[:1])[0]
    assert traj.error is None and len(traj.memory_turns) == 3 and traj.turns[-1].kind == "answer"
    assert not traj.format_ok  # greedy SmolLM2 does not write the four tags unaided
    no_memory = len(agent.prompts.no_memory_ids)
    assert all(t.memory_tokens == no_memory for t in traj.memory_turns if t.check != "yes")
