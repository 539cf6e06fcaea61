"""The memory loop's logic on a scripted engine (exact control of every turn), then end to end on SmolLM2."""
import re
from dataclasses import replace

import pytest

from grumem.agent import AgentConfig, MemoryAgent, TurnFormat
from grumem.agent.parsing import parse_turn
from grumem.engine import LLM, CompletionOutput, RequestOutput, SamplingParams, TokenRole
from grumem.engine.seeding import mix_seed
from grumem.tasks import Sample, make_samples


class ScriptedLLM:
    """Stands in for the engine: each memory turn's output comes from `script(chunk_text, memory_text)`; a scored
    question gets a logprob of -1 per token after a section holding CHUNK1, -2 after an empty one, else -3. Every
    request finishes in the step after it was added; `fail_at_step` makes that step raise."""

    def __init__(self, tokenizer, script, fail_at_step: int | None = None):
        self.tokenizer, self.script, self.fail_at_step = tokenizer, script, fail_at_step
        self.device, self.logits_processors = "cpu", {}
        self.eos_token_id = tokenizer.eos_token_id
        self.queue, self.prompts, self.params, self.pins, self.aborted, self.num_steps = [], [], [], [], [], 0

    def add_logits_processor(self, processor):
        self.logits_processors[processor.name] = processor

    def add_request(self, prompt_ids, params: SamplingParams, request_id=None, priority=0):
        request_id = f"r{len(self.prompts)}"
        self.prompts.append(prompt_ids)
        self.params.append(params)
        self.queue.append((request_id, prompt_ids, params))
        return request_id

    def step(self):
        self.num_steps += 1
        if self.num_steps == self.fail_at_step:
            raise RuntimeError("device lost")
        outputs, self.queue = [self._answer(*item) for item in self.queue], []
        return outputs

    def abort(self, request_ids):
        self.aborted += list(request_ids)
        self.queue = [item for item in self.queue if item[0] not in request_ids]

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
    assert baseline.logits_processors == {} and baseline.max_tokens == 1
    start, end = first_turn.prompt_logprobs
    assert llm.prompts[1][start:end] == question
    assert first_turn.logits_processors[TurnFormat.name].evidence_offset == pytest.approx(-2.0 * len(question) + 0.5)
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
    llm = ScriptedLLM(tokenizer, scripted)
    agent = MemoryAgent(llm, AgentConfig(chunk_tokens=8, exit_gate=False))
    sample = three_chunk_sample(tokenizer)
    traj = agent.run([sample])[0]
    memory_ids = parse_turn(traj.turns[0].output_ids, agent.turn_format.grammar.piece).memory_ids
    assert tokenizer.decode(memory_ids) == "MEM-A"
    question = tokenizer.encode(sample.question, add_special_tokens=False)
    assert traj.turns[1].prompt_ids == agent.prompts.memory_prompt(question, memory_ids, sample.context_ids[8:16])


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
    agent = MemoryAgent(smollm2_llm, config)
    for sample, traj in zip(samples, agent.run(samples)):
        assert all(t.check == "no" for t in traj.memory_turns if not t.has_evidence)
        assert traj.exit_timing == "exact" and traj.memory_turns[-1].check == "yes"
        assert traj.score == 1.0, (traj.answer, sample.answers)
        # the answer prompt holds exactly the ids the needle's turn wrote as its memory
        memory_ids = parse_turn(traj.memory_turns[-1].output_ids, agent.turn_format.grammar.piece).memory_ids
        assert traj.turns[-1].prompt_ids == agent.prompts.answer_prompt(agent.prompts.encode(sample.question),
                                                                         memory_ids)


def test_rollout_groups_fork_and_keep_exact_ids(smollm2_llm, niah_samples):
    agent = MemoryAgent(smollm2_llm, AgentConfig(exit_gate=False, **E2E))
    groups = agent.rollout(niah_samples, group_size=3, temperature=1.0, seed=1)
    assert [len(g) for g in groups] == [3, 3]
    for sample, group in zip(niah_samples, groups):
        question = agent.prompts.encode(sample.question)
        first_prompt = agent.prompts.memory_prompt(question, agent.prompts.no_memory_ids, sample.context_ids[:160])
        assert all(t.turns[0].prompt_ids == first_prompt for t in group)
        assert [t.group_index for t in group] == [0, 1, 2]
        assert len({tuple(t.turns[0].output_ids) for t in group}) > 1  # the forks sample apart
        for traj in group:
            for turn in traj.turns:
                assert len(turn.output_ids) == len(turn.logprobs) == len(turn.roles)


def test_model_that_never_writes_tags(smollm2_llm, niah_samples):
    """Unconstrained, the untrained model ignores the format: every turn is a format failure, nothing crashes."""
    agent = MemoryAgent(smollm2_llm, AgentConfig(exit_gate=False, constraint=None, **E2E))
    traj = agent.run(niah_samples[:1])[0]
    assert traj.error is None and len(traj.memory_turns) == 3 and traj.turns[-1].kind == "answer"
    assert not traj.format_ok  # greedy SmolLM2 does not write the four tags unaided
    no_memory = len(agent.prompts.no_memory_ids)
    assert all(t.memory_tokens == no_memory for t in traj.memory_turns if t.check != "yes")


def test_one_first_request_per_group_and_own_seed_streams(tokenizer):
    llm = ScriptedLLM(tokenizer, scripted)
    agent = MemoryAgent(llm, AgentConfig(chunk_tokens=8, exit_gate=False, temperature=0.3, seed=5,
                                         gate_prior_threshold=None))
    samples = [three_chunk_sample(tokenizer)] * 2
    groups = agent.rollout(samples, group_size=3, temperature=1.0, seed=9)
    assert [[t.group_index for t in group] for group in groups] == [[0, 1, 2]] * 2
    first = [p for p in llm.params if p.n == 3]
    assert len(first) == 2 and len(llm.params) == 2 + 2 * 3 * 3  # one forked first turn per group, then per reader
    assert all(p.temperature == 1.0 for p in llm.params) and agent.config.temperature == 0.3  # config untouched
    later = [p.seed for p in llm.params if p.n == 1]
    assert len(set(later)) == len(later)  # every reader's every turn draws from its own stream
    assert first[0].seed == mix_seed(mix_seed(9, 0, 0), 0)
    llm.params.clear()
    agent.run(samples)
    seeds = [p.seed for p in llm.params]
    assert all(p.temperature == 0.3 for p in llm.params) and len(set(seeds)) == len(seeds)  # two documents apart
    assert seeds[0] == mix_seed(mix_seed(5, 0), 0) and seeds[1] == mix_seed(mix_seed(5, 1), 0)


def test_an_error_mid_run_aborts_what_was_submitted_and_releases_pins(tokenizer):
    llm = ScriptedLLM(tokenizer, scripted, fail_at_step=2)  # after the first turns, while the second are queued
    agent = MemoryAgent(llm, AgentConfig(chunk_tokens=8, exit_gate=False))
    with pytest.raises(RuntimeError, match="device lost"):
        agent.run([three_chunk_sample(tokenizer)] * 2)
    assert sorted(llm.aborted) == ["r2", "r3"] and llm.queue == []
    assert llm.pins == []


def test_outputs_of_other_clients_are_ignored(tokenizer):
    llm = ScriptedLLM(tokenizer, scripted)
    foreign = RequestOutput("someone-else", [1, 2], [CompletionOutput(0, [3], [0.0], [TokenRole.SAMPLED], "stop")])
    real_step = llm.step
    llm.step = lambda: [foreign] + real_step()
    traj = MemoryAgent(llm, AgentConfig(chunk_tokens=8)).run([three_chunk_sample(tokenizer)])[0]
    assert traj.error is None and traj.answer == "MEM-A"


def test_progress_advances_as_each_document_finishes(tokenizer, monkeypatch):
    events = []

    class Bar:
        def __init__(self, total, **kwargs):
            self.total, self.postfix = total, {}

        def update(self, n):
            events.append((llm.num_steps, n, dict(self.postfix)))

        def set_postfix(self, counts, refresh=True):
            self.postfix = dict(counts)

        def close(self):
            pass

    monkeypatch.setattr("grumem.agent.loop_run.tqdm", Bar)
    llm = ScriptedLLM(tokenizer, scripted)
    short = Sample("test", 1, three_chunk_sample(tokenizer).context_ids[:8], "Which chunk?", ["x"], [], "sub_em")
    config = AgentConfig(chunk_tokens=8, exit_gate=False, gate_prior_threshold=None)
    MemoryAgent(llm, config).run([three_chunk_sample(tokenizer), short])
    # the one-chunk document is done after its memory and answer turns (step 2), the other after four turns
    assert [(step, n) for step, n, _ in events] == [(2, 1), (4, 1)]
    # the counts are current when a document closes: four turns (three of them chunks) of steps 1 and 2
    assert events[0][2] == {"turns": 4, "chunks": 3}


def test_turns_in_flight_go_before_new_documents_on_the_real_engine(tiny_llama_path):
    """One sequence at a time: a document's next turn (priority 0) is admitted before the first turns of documents
    still waiting (priority 1), so each document is read to its answer before the next one starts."""
    llm = LLM(tiny_llama_path, num_kvcache_blocks=256, max_num_seqs=1)
    samples = make_samples("niah_single_1", llm.tokenizer, 256, 4, seed=2)
    config = AgentConfig(chunk_tokens=128, memory_tokens=4, max_think_tokens=4, answer_tokens=4,
                         exit_gate=False, gate_prior_threshold=None)
    agent = MemoryAgent(llm, config)
    agent.run(samples[3:])  # caches the prompts' common start: new documents are then no colder than turns in flight
    samples = samples[:3]
    finished = []
    real_step = llm.step
    llm.step = lambda: [finished.append(o.prompt_token_ids) or o for o in real_step()]
    trajs = agent.run(samples)
    owner = {tuple(turn.prompt_ids): t.sample_index for t in trajs for turn in t.turns}
    order = [owner[tuple(ids)] for ids in finished]
    assert order == sorted(order) and len(order) == sum(len(t.turns) for t in trajs) == 9


def test_the_same_seed_gives_the_same_traces_across_runs_and_batch_compositions(tiny_llama_path):
    """Sampled turns (temperature 1, seed 3): two runs agree token for token, and document 0's trace does not depend
    on which documents share the batch with it (greedy: nor on its position)."""
    llm = LLM(tiny_llama_path, num_kvcache_blocks=512)
    docs = make_samples("niah_single_1", llm.tokenizer, 384, 5, seed=4)
    config = AgentConfig(chunk_tokens=128, memory_tokens=6, max_think_tokens=4, answer_tokens=4,
                         gate_prior_threshold=None, exit_gate=False, temperature=1.0, seed=3)

    def traces(agent_config, samples):
        return [[(t.prompt_ids, t.output_ids, t.roles) for t in traj.turns]
                for traj in MemoryAgent(llm, agent_config).run(samples)]

    first = traces(config, docs[:3])
    assert traces(config, docs[:3]) == first
    assert traces(config, [docs[0], docs[3], docs[4]])[0] == first[0] == traces(config, docs[:1])[0]
    assert traces(replace(config, seed=4), docs[:1])[0] != first[0]  # the turns really were sampled
    greedy = replace(config, temperature=0.0, seed=None)
    alone = traces(greedy, docs[:1])[0]
    assert traces(greedy, [docs[3], docs[4], docs[0]])[2] == alone
