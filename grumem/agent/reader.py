"""Reader: one trajectory through one document, turn by turn (loop_run.py submits its requests and hands each
finished one back)."""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from grumem.agent import gate_prior
from grumem.agent.format_processor import TurnFormat
from grumem.agent.parsing import extract_answer, parse_turn
from grumem.agent.trajectory import TurnRecord, Trajectory
from grumem.engine import CompletionOutput, RequestOutput, SamplingParams
from grumem.engine.seeding import mix_seed
from grumem.tasks import Sample, num_chunks, score

if TYPE_CHECKING:
    from grumem.agent.loop import MemoryAgent


@dataclass(frozen=True, slots=True)
class TurnSampling:
    """How one trajectory samples its turns; `seed` starts its own stream (None: the engine's shared generator)."""

    temperature: float
    top_p: float
    seed: int | None

    def turn_seed(self, turn: int) -> int | None:
        return None if self.seed is None else mix_seed(self.seed, turn)


class Reader:
    """Its memory, the chunk it is at, the request of its next turn, and what its turns recorded."""

    def __init__(self, agent: MemoryAgent, sample: Sample, traj: Trajectory, sampling: TurnSampling):
        self.agent, self.sample, self.traj, self.sampling = agent, sample, traj, sampling
        config = agent.config
        self.question_ids = agent.prompts.encode(sample.question)
        self.memory_ids = agent.prompts.no_memory_ids
        self.pinned, self.done = [], False
        self.evidence_offset: float | None = None  # the gate prior's, once the baseline is scored
        self.read_problem: str | None = None  # why the document could not be read on
        # a file's number of chunks is known once its end is reached (_advance)
        traj.num_chunks = None if sample.document is not None else num_chunks(sample.num_tokens, config.chunk_tokens)
        self._seek(0)
        traj.evidence_chunks = sample.evidence_chunks(config.chunk_tokens) if sample.evidence_spans else []
        traj.distractor_chunks = sample.distractor_chunks(config.chunk_tokens)
        self.started = time.perf_counter()

    def problem(self) -> str | None:
        if self.read_problem is not None:
            return self.read_problem
        if self.chunk is None:
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
        prompt, span = self.agent.prompts.scored_memory_prompt(self.question_ids, self.memory_ids, self.chunk)
        processors, prior = {}, config.uses_gate_prior
        if (args := config.section_format(self.chunk)) is not None:
            processors[TurnFormat.name] = replace(args, evidence_offset=self.evidence_offset if prior else None)
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
        """Records the finished turn; returns the next (prompt, params), or None when the answer is in (or the
        document could not be read on: `read_problem` says why)."""
        is_answer = self.chunk is None
        record = TurnRecord(
            "answer" if is_answer else "memory", -1 if is_answer else self.chunk_index, output.prompt_token_ids,
            completion.token_ids, completion.logprobs, completion.roles, completion.finish_reason,
            None if is_answer else self.agent.config.section_format(self.chunk),
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
        self._advance(stop=self.agent.config.uses_exit_gate and record.next == "end")
        return None if self.read_problem is not None else self.next_request()

    def next_request(self, n: int = 1) -> tuple[list[int], SamplingParams]:
        """The memory turn of the current chunk, or the answer once every chunk is read (or the exit gate said end)."""
        return self.answer_request() if self.chunk is None else self.memory_request(n)

    def resume(self, partial: Trajectory) -> None:
        """Goes on from where an earlier reading of this document stopped (a replica that died mid-way): its memory
        turns are kept, the memory is the last one's, and reading continues after its chunk."""
        turns = partial.memory_turns
        self.traj.turns = list(turns)
        if turns:
            last = turns[-1]
            self.memory_ids, self.traj.stop_chunk = last.memory_ids, last.chunk_index
            self._seek(last.chunk_index)
            self._advance(stop=self.agent.config.uses_exit_gate and last.next == "end")

    def _seek(self, index: int) -> None:
        """Reads the document from its start up to chunk `index` (the chunks before it are passed over)."""
        self._chunks = self.sample.chunks(self.agent.prompts.tokenizer, self.agent.config.chunk_tokens)
        self.chunk_index, self.chunk = -1, None
        for _ in range(index + 1):
            self._advance(stop=False)

    def _advance(self, stop: bool) -> None:
        """On to the next chunk; `chunk` is None once the document is read (or reading stops). A file that turns
        out unreadable part-way sets read_problem."""
        self.chunk_index += 1
        try:
            self.chunk = None if stop else next(self._chunks, None)
        except ValueError as e:
            self.chunk, self.read_problem = None, str(e)
        if self.chunk is None and not stop and self.read_problem is None:
            self.traj.num_chunks = self.chunk_index  # the end is known once it is reached

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
        record.memory_ids = self.memory_ids

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
