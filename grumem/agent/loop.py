"""MemoryAgent: the GRU-Mem gated memory loop (and the MemAgent baseline) over many documents at once.

Each document is read chunk by chunk; a finished turn immediately enqueues that document's next turn, so documents
of different lengths never wait for each other. grumem: the memory changes only on <check>yes</check>, and
<next>end</next> stops reading (with the exit gate on); memagent: the memory is every turn's whole response.
With the gate prior on (gate_prior.py), a document first scores its question after an empty section.
"""
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from tqdm.auto import tqdm

from grumem.agent import gate_prior
from grumem.agent.config import AgentConfig
from grumem.agent.format_processor import TurnFormat
from grumem.agent.parsing import extract_answer, parse_turn
from grumem.agent.prompts import PromptBuilder
from grumem.agent.trajectory import TurnRecord, Trajectory
from grumem.engine import LLM, CompletionOutput, RequestOutput, SamplingParams
from grumem.engine.seeding import mix_seed
from grumem.tasks import Sample, chunk_document, score

NEW_DOCUMENT_PRIORITY, IN_FLIGHT_PRIORITY = 1, 0  # turns of documents already being read go first


@dataclass(frozen=True, slots=True)
class TurnSampling:
    """How one trajectory samples its turns; `seed` starts its own stream (None: the engine's shared generator)."""

    temperature: float
    top_p: float
    seed: int | None

    def turn_seed(self, turn: int) -> int | None:
        return None if self.seed is None else mix_seed(self.seed, turn)


class _Reader:
    """One trajectory through one document: its memory, the chunk it is at, and what it recorded."""

    def __init__(self, agent: "MemoryAgent", sample: Sample, traj: Trajectory, sampling: TurnSampling):
        self.agent, self.sample, self.traj, self.sampling = agent, sample, traj, sampling
        config = agent.config
        self.question_ids = agent.prompts.encode(sample.question)
        self.chunks = chunk_document(sample.context_ids, config.chunk_tokens)
        self.memory_ids = agent.prompts.no_memory_ids
        self.chunk_index, self.pinned, self.done = 0, [], False
        self.evidence_offset: float | None = None  # the gate prior's, once the baseline is scored
        traj.num_chunks = len(self.chunks)
        traj.evidence_chunks = sample.evidence_chunks(config.chunk_tokens) if sample.evidence_spans else []
        traj.distractor_chunks = sample.distractor_chunks(config.chunk_tokens)
        self.started = time.perf_counter()

    def problem(self) -> str | None:
        if not self.chunks:
            return "empty document: nothing to read"
        if len(self.question_ids) > self.agent.config.chunk_tokens:
            return (f"question of {len(self.question_ids)} tokens is longer than the chunk budget "
                    f"({self.agent.config.chunk_tokens} tokens)")
        return None

    def baseline_request(self) -> tuple[list[int], SamplingParams]:
        """The question after an empty section, scored: the gate prior's baseline."""
        prompt, (start, end) = self.agent.prompts.scored_memory_prompt(self.question_ids, self.memory_ids, [])
        return prompt[:end], SamplingParams(temperature=0, max_tokens=1, prompt_logprobs=(start, end))

    def set_baseline(self, question_logprobs: list[float]) -> None:
        self.evidence_offset = gate_prior.evidence_offset(question_logprobs, self.agent.config.gate_prior_threshold)

    def memory_request(self, n: int = 1) -> tuple[list[int], SamplingParams]:
        config = self.agent.config
        prompt, span = self.agent.prompts.scored_memory_prompt(self.question_ids, self.memory_ids,
                                                               self.chunks[self.chunk_index])
        processors, prior = {}, config.uses_gate_prior
        if config.memory_format is not None:
            args = replace(config.memory_format, evidence_offset=self.evidence_offset if prior else None)
            processors[TurnFormat.name] = args
        params = SamplingParams(
            temperature=self.sampling.temperature, top_p=self.sampling.top_p, max_tokens=config.memory_turn_tokens,
            n=n, seed=self.sampling.turn_seed(len(self.traj.turns)), prompt_logprobs=span if prior else None,
            logits_processors=processors,
        )
        return prompt, params

    def answer_request(self) -> tuple[list[int], SamplingParams]:
        params = SamplingParams(temperature=self.sampling.temperature, top_p=self.sampling.top_p,
                                max_tokens=self.agent.config.answer_tokens,
                                seed=self.sampling.turn_seed(len(self.traj.turns)))
        return self.agent.prompts.answer_prompt(self.question_ids, self.memory_ids), params

    def on_output(self, output: RequestOutput, completion: CompletionOutput, submitted: float):
        """Records the finished turn; returns the next (prompt, params), or None when the answer is in."""
        is_answer = self.chunk_index >= len(self.chunks)
        record = TurnRecord(
            "answer" if is_answer else "memory", -1 if is_answer else self.chunk_index, output.prompt_token_ids,
            completion.token_ids, completion.logprobs, completion.roles, completion.finish_reason,
            num_cached_tokens=output.num_cached_tokens, seconds=time.perf_counter() - submitted,
        )
        if output.prompt_logprobs is not None and self.evidence_offset is not None:
            record.gate_prior = gate_prior.evidence(output.prompt_logprobs, self.evidence_offset)
        self.traj.turns.append(record)
        if is_answer:
            self._record_answer(completion)
            return None
        self._update_memory(record)
        if not self.pinned:
            self.pinned = self.agent.llm.pin_prefix(self.agent.prompts.document_prefix(self.question_ids))
        self.traj.stop_chunk = self.chunk_index
        stop = self.agent.config.uses_exit_gate and record.next == "end"
        self.chunk_index = len(self.chunks) if stop else self.chunk_index + 1
        return self.answer_request() if self.chunk_index >= len(self.chunks) else self.memory_request()

    def _update_memory(self, record: TurnRecord) -> None:
        ids = record.output_ids
        if self.agent.config.mode == "memagent":
            eos = self.agent.llm.eos_token_id
            self.memory_ids = ids[:-1] if ids and ids[-1] == eos else ids
        else:
            turn = parse_turn(ids, self.agent.turn_format.grammar.piece)
            record.check, record.next, record.well_formed = turn.check, turn.next, turn.well_formed
            if turn.check == "yes" and turn.memory_ids:
                self.memory_ids = turn.memory_ids
        if self.sample.evidence_spans:
            record.has_evidence = record.chunk_index in self.traj.evidence_chunks
        record.has_distractor = record.chunk_index in self.traj.distractor_chunks
        record.memory_tokens = len(self.memory_ids)

    def _record_answer(self, completion: CompletionOutput) -> None:
        text = self.agent.llm.tokenizer.decode(completion.token_ids, skip_special_tokens=True)
        self.traj.answer, self.traj.boxed = extract_answer(text)
        if self.sample.answers:
            self.traj.score = score(self.sample, self.traj.answer)

    def finish(self, error: str | None = None, aborted: bool = False) -> None:
        self.traj.error, self.traj.aborted = error, aborted
        self.traj.seconds = time.perf_counter() - self.started
        if self.pinned:
            self.agent.llm.unpin(self.pinned)
            self.pinned = []
        self.done = True


class MemoryAgent:
    def __init__(self, llm: LLM, config: AgentConfig | None = None):
        self.llm, self.config = llm, config or AgentConfig()
        self.prompts = PromptBuilder(llm.tokenizer, self.config.mode, self.config.layout)
        self.turn_format = TurnFormat.of(llm)

    def run(self, samples: list[Sample], progress: bool = False,
            on_finish: Callable[[Trajectory], None] | None = None) -> list[Trajectory]:
        """Reads every document once; returns one trajectory per sample, in order. `on_finish` gets each trajectory
        as soon as its document is done (answered, failed, or aborted by an exception)."""
        config = self.config
        groups = [[_Reader(self, s, Trajectory(i), TurnSampling(
            config.temperature, config.top_p, None if config.seed is None else mix_seed(config.seed, i)))]
            for i, s in enumerate(samples)]
        self._drive(groups, progress, on_finish)
        return [group[0].traj for group in groups]

    def rollout(self, samples: list[Sample], group_size: int, temperature: float = 1.0, top_p: float = 1.0,
                seed: int = 0, progress: bool = False) -> list[list[Trajectory]]:
        """G sampled trajectories per sample; the first turn is prefilled once and forked G ways."""
        if group_size < 1:
            raise ValueError(f"group_size must be >= 1, got {group_size}")
        groups = [[_Reader(self, s, Trajectory(i, g), TurnSampling(temperature, top_p, mix_seed(seed, i, g)))
                   for g in range(group_size)] for i, s in enumerate(samples)]
        self._drive(groups, progress)
        return [[reader.traj for reader in group] for group in groups]

    def _drive(self, groups: list[list[_Reader]], progress: bool,
               on_finish: Callable[[Trajectory], None] | None = None) -> None:
        """Runs every group to its end. If anything raises, the requests submitted here are aborted and every
        document is closed (its pinned prefix released) before the exception goes on."""
        pending: dict[str, tuple[list[_Reader], float, bool]] = {}  # readers, submitted at, is a prior baseline
        bar = tqdm(total=sum(len(g) for g in groups), desc="documents", unit="doc", disable=not progress)
        counts = {"turns": 0, "chunks": 0}

        def submit(request, readers: list[_Reader], priority: int, baseline: bool = False) -> None:
            try:
                request_id = self.llm.add_request(*request, priority=priority)
            except ValueError as e:
                return close(readers, str(e))
            pending[request_id] = (readers, time.perf_counter(), baseline)

        def start_reading(group: list[_Reader]) -> None:
            """The first memory turn, prefilled once and forked over the group."""
            submit(group[0].memory_request(n=len(group)), group, NEW_DOCUMENT_PRIORITY)

        def close(readers: list[_Reader], error: str | None = None, aborted: bool = False) -> None:
            for reader in readers:
                if not reader.done:
                    reader.finish(error, aborted)
                    bar.update(1)
                    if on_finish is not None:
                        on_finish(reader.traj)

        def on_turn(reader: _Reader, output: RequestOutput, completion: CompletionOutput, submitted: float) -> None:
            request = reader.on_output(output, completion, submitted)
            counts["turns"] += 1
            counts["chunks"] += reader.traj.turns[-1].kind == "memory"
            if request is None:
                close([reader])
            else:
                submit(request, [reader], IN_FLIGHT_PRIORITY)

        try:
            for group in groups:
                problem = group[0].problem()
                if problem is not None:
                    close(group, problem)
                elif self.config.uses_gate_prior:
                    submit(group[0].baseline_request(), group, NEW_DOCUMENT_PRIORITY, baseline=True)
                else:
                    start_reading(group)
            while pending:
                for output in self.llm.step():
                    if output.request_id not in pending:
                        continue  # another client's request on the same engine
                    readers, submitted, baseline = pending.pop(output.request_id)
                    if output.error is not None:
                        close(readers, output.error)
                    elif baseline:
                        for reader in readers:
                            reader.set_baseline(output.prompt_logprobs)
                        start_reading(readers)
                    else:
                        for reader, completion in zip(readers, output.outputs):
                            on_turn(reader, output, completion, submitted)
                bar.set_postfix(counts, refresh=False)
        except BaseException as e:
            self.llm.abort(list(pending))
            close([reader for group in groups for reader in group], f"aborted: {type(e).__name__} {e}".strip(),
                  aborted=True)
            raise
        finally:
            bar.close()
