"""LoopRun: the documents of one MemoryAgent.run (or rollout) in flight on an engine that others may share.

It submits each document's turns as engine requests, takes the outputs of its own requests (the others belong to
other clients of the same engine) and closes each document when it is answered, fails or is aborted. Whoever steps
the engine hands it the outputs: MemoryAgent.run in a loop of its own, the server's engine thread for many runs.
"""
import time
from collections.abc import Callable

from tqdm.auto import tqdm

from grumem.agent.reader import Reader
from grumem.agent.trajectory import TurnRecord, Trajectory
from grumem.engine import LLM, CompletionOutput, RequestOutput

NEW_DOCUMENT_PRIORITY, IN_FLIGHT_PRIORITY = 1, 0  # turns of documents already being read go first


class LoopRun:
    def __init__(self, llm: LLM, groups: list[list[Reader]], progress: bool = False,
                 on_finish: Callable[[Trajectory], None] | None = None,
                 on_turn: Callable[[Trajectory, TurnRecord], None] | None = None):
        """`groups`: the readers of each document (G rollouts share their first turn's prefill). `on_finish` gets
        each trajectory as soon as its document is done; `on_turn` each turn as it is recorded."""
        self.llm, self.groups = llm, groups
        self.on_finish, self.on_turn = on_finish, on_turn
        self.pending: dict[str, tuple[list[Reader], float, bool]] = {}  # readers, submitted at, is a prior baseline
        self.bar = tqdm(total=sum(len(g) for g in groups), desc="documents", unit="doc", disable=not progress)
        self.counts = {"turns": 0, "chunks": 0}

    @property
    def done(self) -> bool:
        """Every document is closed (an open one always has a request in flight)."""
        return not self.pending

    def owns(self, request_id: str) -> bool:
        return request_id in self.pending

    def start(self) -> None:
        """Submits every document's first request; one that cannot be read is closed with its problem."""
        for group in self.groups:
            problem = group[0].problem()
            if problem is not None:
                self._close(group, problem)
            elif group[0].agent.config.uses_gate_prior:
                self._submit(group[0].baseline_request(), group, NEW_DOCUMENT_PRIORITY, baseline=True)
            else:
                self._start_reading(group)

    def handle(self, output: RequestOutput) -> bool:
        """Takes a finished request if it is one of this run's (and submits what follows); False when it is not."""
        entry = self.pending.pop(output.request_id, None)
        if entry is None:
            return False
        readers, submitted, baseline = entry
        if output.error is not None:
            self._close(readers, output.error)
        elif baseline:
            for reader in readers:
                reader.set_baseline(output.prompt_logprobs)
            self._start_reading(readers)
        else:
            for reader, completion in zip(readers, output.outputs):
                self._on_turn(reader, output, completion, submitted)
        return True

    def abort(self, reason: str) -> list[RequestOutput]:
        """Stops the run: its requests leave the engine (their partial outputs are returned) and every open document
        is closed as aborted."""
        outputs = self.llm.abort(list(self.pending))
        self.pending.clear()
        self._close([reader for group in self.groups for reader in group], reason, aborted=True)
        return outputs

    def close(self) -> None:
        self.bar.close()

    def _submit(self, request, readers: list[Reader], priority: int, baseline: bool = False) -> None:
        try:
            request_id = self.llm.add_request(*request, priority=priority)
        except ValueError as e:
            return self._close(readers, str(e))
        self.pending[request_id] = (readers, time.perf_counter(), baseline)

    def _start_reading(self, group: list[Reader]) -> None:
        """The first memory turn (of a resumed reading: its next turn), prefilled once and forked over the group."""
        self._submit(group[0].next_request(n=len(group)), group, NEW_DOCUMENT_PRIORITY)

    def _on_turn(self, reader: Reader, output: RequestOutput, completion: CompletionOutput, submitted: float) -> None:
        request = reader.on_output(output, completion, submitted)
        record = reader.traj.turns[-1]
        self.counts["turns"] += 1
        self.counts["chunks"] += record.kind == "memory"
        self.bar.set_postfix(self.counts, refresh=False)
        if self.on_turn is not None:
            self.on_turn(reader.traj, record)
        if request is None:
            self._close([reader], reader.read_problem)
        else:
            self._submit(request, [reader], IN_FLIGHT_PRIORITY)

    def _close(self, readers: list[Reader], error: str | None = None, aborted: bool = False) -> None:
        for reader in readers:
            if not reader.done:
                reader.finish(error, aborted)
                self.bar.update(1)
                if self.on_finish is not None:
                    self.on_finish(reader.traj)
