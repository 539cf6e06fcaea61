"""What the endpoints share: the server's state, OpenAI-shaped errors, server-sent events, and waiting for a
result while watching for the client to go away."""
import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from fastapi import Request
from fastapi.responses import JSONResponse

from grumem.engine import LLM
from grumem.serve.engine_loop import EngineLoop
from grumem.serve.metrics import ServerMetrics

DISCONNECT_POLL_S = 0.25


@dataclass
class ServerState:
    llm: LLM
    loop: EngineLoop
    metrics: ServerMetrics
    model_name: str
    control: bool  # the RL control endpoints are on
    agents: dict = field(default_factory=dict)  # memory-loop settings -> their MemoryAgent (serve/memory_api.py)

    @property
    def tokenizer(self):
        return self.llm.tokenizer


def server(request: Request) -> ServerState:
    return request.app.state.server


class ClientGone(Exception):
    """The client disconnected before its answer was ready; its work was cancelled."""


class BadRequest(ValueError):
    """A request the server understood but cannot serve (400), with a message that names the problem."""


def error_response(status: int, message: str, kind: str = "invalid_request_error",
                   headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "code": status}}, status, headers=headers)


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def now() -> int:
    return int(time.time())


def sse(payload) -> str:
    return f"data: {json.dumps(payload)}\n\n"


SSE_DONE = "data: [DONE]\n\n"


async def unless_disconnected(request: Request, work: Awaitable, on_disconnect: Callable[[], object]):
    """The result of `work`; if the client disconnects first, `work` is cancelled, on_disconnect() is called (it
    aborts what the request holds in the engine) and ClientGone is raised."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if task in done:
        return task.result()
    task.cancel()
    on_disconnect()
    raise ClientGone()


async def _disconnected(request: Request) -> None:
    while not await request.is_disconnected():
        await asyncio.sleep(DISCONNECT_POLL_S)


async def merged(streams) -> AsyncIterator[tuple[int, bool, object]]:
    """(stream index, final, payload) from several streams as they come."""
    queue: asyncio.Queue = asyncio.Queue()

    async def pump(i, stream):
        async for final, payload in stream.events():
            await queue.put((i, final, payload))

    tasks = [asyncio.ensure_future(pump(i, s)) for i, s in enumerate(streams)]
    try:
        remaining = len(streams)
        while remaining:
            i, final, payload = await queue.get()
            remaining -= final
            yield i, final, payload
    finally:
        for task in tasks:
            task.cancel()
