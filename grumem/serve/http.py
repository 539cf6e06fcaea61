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


@dataclass
class ServerState:
    llm: LLM
    loop: EngineLoop
    metrics: ServerMetrics
    model_name: str
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


class ModelNotFound(Exception):
    """A request names a model this server does not serve (404)."""


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


async def sse_stream(events: AsyncIterator[str], release: Callable[[], object]) -> AsyncIterator[str]:
    """`events`, then [DONE]. An error midway becomes an error event; a stream that does not run to its end (an
    error, or the client went away) calls release() to abort what the request holds in the engine."""
    finished = False
    try:
        async for event in events:
            yield event
        finished = True
    except Exception as e:
        yield sse_error(e)
    finally:
        if not finished:
            release()
    yield SSE_DONE


def sse_error(e: Exception) -> str:
    """An error after a stream has started (its 200 is sent): an event, as vLLM sends it."""
    status, kind = (400, "invalid_request_error") if isinstance(e, ValueError) else (500, "server_error")
    return sse({"error": {"message": str(e), "type": kind, "code": status}})


async def unless_disconnected(request: Request, work: Awaitable, release: Callable[[], object]):
    """The result of `work`. If the client disconnects first (then ClientGone is raised), the work fails, or this
    coroutine is cancelled, `work` is cancelled and release() aborts what the request holds in the engine."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            return task.result()  # its exception, if any, goes on (and what it held is aborted below)
        raise ClientGone()
    except BaseException:
        task.cancel()
        release()
        raise
    finally:
        watcher.cancel()


async def _disconnected(request: Request) -> None:
    """Returns when the client goes away. Once the body is read, the server's next message is the disconnect:
    waiting for it costs nothing, where polling woke the event loop (and stalled the engine's threads) 4 times a
    second per request."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


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
