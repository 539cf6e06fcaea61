"""EngineLoop: one thread owns the engine and steps it; the server's event loop talks to it through an inbox.

Everything that touches the engine (adding a request, aborting, pausing, loading weights) is a function put in the
inbox and run on the engine thread before its next step, so the engine itself stays single-threaded. Each plain
request and each memory-loop run has a Stream on which the thread sends what it produced: None once accepted,
partial outputs of watched requests after every step, each memory turn as it is recorded, and the final result.
Memory-loop runs of all clients share the continuous batch with the plain requests, as the documents of one
MemoryAgent.run do. Whatever fails on the thread fails the requests it concerns with a message, never the thread.
"""
import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from grumem.agent import LoopRun, Trajectory
from grumem.engine import LLM, RequestOutput, SamplingParams

log = logging.getLogger("grumem.serve")


class Overloaded(Exception):
    """The server holds as many requests as it admits; the client should retry later."""


@dataclass(eq=False)
class Stream:
    """Events for one request, sent from the engine thread to the coroutine that answers it: (final, payload)."""

    loop: asyncio.AbstractEventLoop
    watch: bool = False  # plain requests: send a partial output after every step that added tokens
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    num_sent_tokens: int = 0

    def send(self, final: bool, payload: Any) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, (final, payload))

    async def next(self) -> tuple[bool, Any]:
        return await self.queue.get()

    async def final(self) -> Any:
        """The final payload (the events before it are dropped)."""
        async for final, payload in self.events():
            if final:
                return payload

    async def events(self):
        """(final, payload) pairs, the final one last."""
        while True:
            final, payload = await self.queue.get()
            yield final, payload
            if final:
                return


@dataclass(eq=False)
class _Run:
    run: LoopRun
    stream: Stream


class EngineLoop:
    def __init__(self, llm: LLM, max_requests: int,
                 on_finished: Callable[[list[RequestOutput]], None] | None = None,
                 on_trajectory: Callable[[Trajectory], None] | None = None):
        """`max_requests`: client requests and memory runs held at once (running or waiting); beyond it,
        Overloaded. On the engine thread, `on_finished` sees every engine request that ends (finished by a step or
        aborted) and `on_trajectory` every memory-loop document that ends (metrics)."""
        self.llm, self.max_requests = llm, max_requests
        self.on_finished, self.on_trajectory = on_finished, on_trajectory
        self.weight_version = 0
        self.paused = False
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._wake = threading.Event()
        self._streams: dict[str, Stream] = {}  # engine request id -> its stream
        self._clients: dict[str, list[str]] = {}  # client rid -> its engine requests still in flight
        self._runs: dict[str, _Run] = {}  # client rid -> its memory run
        self._held = 0  # admitted and not finished; guarded by _lock
        self._lock = threading.Lock()
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="grumem-engine", daemon=True)
        self._thread.start()

    # --- called from the event loop -------------------------------------------------------------------------
    def call(self, fn: Callable[[], Any]) -> asyncio.Future:
        """Runs fn on the engine thread before its next step; await its result (or its exception)."""
        future: Future = Future()
        self._put(lambda: _settle(future, fn))
        return asyncio.wrap_future(future)

    def generate(self, rid: str, prompts: list[list[int]], params: SamplingParams, watch: bool = False) -> list[Stream]:
        """Queues one client request of one or more prompts (engine requests `rid#i`), admitted as a unit. Each
        stream first sends None (accepted) and ends with the final RequestOutput (error set when it was rejected)."""
        self._admit()
        streams = [Stream(asyncio.get_running_loop(), watch) for _ in prompts]
        self._put(lambda: self._add_requests(rid, prompts, params, streams))
        return streams

    def memory(self, rid: str, make_run: Callable[[Callable], LoopRun]) -> Stream:
        """Starts a memory-loop run built on the engine thread by make_run(on_turn). Its stream sends None once
        accepted, ("turn", trajectory, record) per turn, and ends with the run's trajectories (a ValueError when
        it was rejected)."""
        self._admit()
        stream = Stream(asyncio.get_running_loop())
        self._put(lambda: self._start_run(rid, make_run, stream))
        return stream

    def abort(self, rid: str | None = None, stream: Stream | None = None) -> asyncio.Future:
        """Aborts one client request or memory run (every one when rid is None; with `stream`, only if the rid is
        still the one that stream belongs to); resolves to how many were stopped."""
        return self.call(lambda: self._abort(rid, owner=stream))

    def abort_prompt(self, rid: str, index: int) -> asyncio.Future:
        """Aborts one prompt of a client request (its stream ends with the partial output)."""
        return self.call(lambda: self._abort_requests([f"{rid}#{index}"]))

    def stop(self) -> None:
        self._stopping = True
        self._put(lambda: self._abort(None))
        self._thread.join(timeout=30)

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def num_held(self) -> int:
        return self._held

    def _admit(self) -> None:
        if not self.is_alive():
            raise RuntimeError("the engine thread has stopped")
        with self._lock:
            if self._held >= self.max_requests:
                raise Overloaded(f"the server holds {self._held} requests, its limit (--max-queue)")
            self._held += 1

    def _release(self) -> None:
        with self._lock:
            self._held -= 1

    def _put(self, fn: Callable[[], None]) -> None:
        self._inbox.put(fn)
        self._wake.set()

    # --- the engine thread ----------------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stopping:
            self._drain()
            if self.paused or not self.llm.has_unfinished_requests():
                self._wake.wait()
                self._wake.clear()
                continue
            try:
                outputs = self.llm.step()
                self._report(outputs)
                self._dispatch(outputs)
                self._send_partials()
            except Exception as e:  # a bug must not leave clients waiting forever
                log.exception("engine step failed; failing everything in flight")
                self._fail_all(f"server error: {type(e).__name__}: {e}")
        self._drain()

    def _drain(self) -> None:
        while True:
            try:
                fn = self._inbox.get_nowait()
            except queue.Empty:
                return
            try:
                fn()
            except Exception as e:
                log.exception("a server job failed on the engine thread")
                self._fail_all(f"server error: {type(e).__name__}: {e}")

    def _add_requests(self, rid: str, prompts: list[list[int]], params: SamplingParams, streams: list[Stream]) -> None:
        """All or none: a prompt that is rejected fails the whole client request with its message."""
        ids = [f"{rid}#{i}" for i in range(len(prompts))]
        added = []
        try:
            if rid in self._clients or rid in self._runs:
                raise ValueError(f"request id {rid!r} is already in flight")
            for request_id, prompt in zip(ids, prompts):
                self.llm.add_request(prompt, params, request_id)
                added.append(request_id)
        except Exception as e:
            self.llm.abort(added)
            self._release()
            message = str(e) if isinstance(e, ValueError) else f"server error: {type(e).__name__}: {e}"
            for request_id, prompt, stream in zip(ids, prompts, streams):
                stream.send(True, RequestOutput(request_id, list(prompt), [], 0, message))
            return
        self._clients[rid] = ids
        for request_id, stream in zip(ids, streams):
            self._streams[request_id] = stream
            stream.send(False, None)

    def _finish_request(self, output: RequestOutput) -> None:
        self._streams.pop(output.request_id).send(True, output)
        rid = output.request_id.rpartition("#")[0]
        remaining = self._clients[rid]
        remaining.remove(output.request_id)
        if not remaining:
            del self._clients[rid]
            self._release()

    def _start_run(self, rid: str, make_run, stream: Stream) -> None:
        def on_turn(trajectory, record):
            stream.send(False, ("turn", trajectory, record))

        try:
            if rid in self._clients or rid in self._runs:
                raise ValueError(f"request id {rid!r} is already in flight")
            run = make_run(on_turn)
        except Exception as e:
            self._release()
            stream.send(True, e if isinstance(e, ValueError) else RuntimeError(f"server error: {e}"))
            return
        self._runs[rid] = _Run(run, stream)
        stream.send(False, None)
        try:
            run.start()
        except Exception as e:
            log.exception("memory run %s failed to start", rid)
            self._report(run.abort(f"server error: {type(e).__name__}: {e}"))
        self._finish_if_done(rid)

    def _dispatch(self, outputs: list[RequestOutput]) -> None:
        for output in outputs:
            if output.request_id in self._streams:
                self._finish_request(output)
                continue
            for rid, entry in list(self._runs.items()):
                if self._handle(rid, entry, output):
                    break

    def _handle(self, rid: str, entry: _Run, output: RequestOutput) -> bool:
        try:
            taken = entry.run.handle(output)
        except Exception as e:
            log.exception("memory run %s failed", rid)
            self._report(entry.run.abort(f"server error: {type(e).__name__}: {e}"))
            taken = True
        if taken:
            self._finish_if_done(rid)
        return taken

    def _finish_if_done(self, rid: str) -> None:
        entry = self._runs[rid]
        if entry.run.done:
            del self._runs[rid]
            entry.run.close()
            self._release()
            trajectories = [[reader.traj for reader in group] for group in entry.run.groups]
            if self.on_trajectory is not None:
                for trajectory in (t for group in trajectories for t in group):
                    self.on_trajectory(trajectory)
            entry.stream.send(True, trajectories)

    def _send_partials(self) -> None:
        for request_id, stream in self._streams.items():
            if stream.watch:
                partial = self.llm.partial_output(request_id)
                num_tokens = sum(len(c.token_ids) for c in partial.outputs) if partial is not None else 0
                if num_tokens > stream.num_sent_tokens:
                    stream.num_sent_tokens = num_tokens
                    stream.send(False, partial)

    def _abort(self, rid: str | None, error: str | None = None, owner: Stream | None = None) -> int:
        """Stops client requests (their partial outputs are their final ones, finish_reason "abort") and memory
        runs; returns how many. `error`: why, when it is a failure rather than a client's wish."""
        clients = list(self._clients) if rid is None else [rid] if rid in self._clients else []
        runs = list(self._runs) if rid is None else [rid] if rid in self._runs else []
        if owner is not None:
            clients = [c for c in clients if any(self._streams.get(i) is owner for i in self._clients[c])]
            runs = [r for r in runs if self._runs[r].stream is owner]
        for client in clients:
            self._abort_requests(list(self._clients[client]), error)
        for run_id in runs:
            self._report(self._runs[run_id].run.abort(error or "aborted"))
            self._finish_if_done(run_id)
        return len(clients) + len(runs)

    def _abort_requests(self, request_ids: list[str], error: str | None = None) -> None:
        outputs = self.llm.abort([i for i in request_ids if i in self._streams])
        for output in outputs:
            output.error = error
        self._report(outputs)
        for output in outputs:
            self._finish_request(output)

    def _fail_all(self, error: str) -> None:
        """After a failure on this thread: every request and run ends with `error`, whatever state it was left in."""
        try:
            self._abort(None, error)
        except Exception:
            log.exception("aborting after a failure failed too")
        for request_id in list(self._streams):  # those the engine had already let go of
            self._finish_request(RequestOutput(request_id, [], [], 0, error))
        for rid in list(self._runs):
            entry = self._runs.pop(rid)
            self._release()
            entry.stream.send(True, RuntimeError(error))

    def _report(self, outputs: list[RequestOutput]) -> None:
        if self.on_finished is not None and outputs:
            try:
                self.on_finished(outputs)
            except Exception:
                log.exception("recording metrics failed")


def _settle(future: Future, fn: Callable[[], Any]) -> None:
    try:
        future.set_result(fn())
    except Exception as e:
        future.set_exception(e)
