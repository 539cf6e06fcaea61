"""The HTTP server: a FastAPI app over one EngineLoop, and how to run it (uvicorn).

Every endpoint validates its body first; a bad one gets a 400 naming the problem (never the engine's or pydantic's
internals), a full server a 503 with Retry-After, and none of it touches the requests already in flight.
"""
import contextlib
import socket

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from grumem.agent import TurnFormat
from grumem.engine import LLM
from grumem.serve import control_api, generate_api, memory_api, openai_api
from grumem.serve.engine_loop import EngineLoop, Overloaded
from grumem.serve.http import ClientGone, ModelNotFound, ServerState, error_response, server
from grumem.serve.metrics import ServerMetrics

RETRY_AFTER_S = 1


def build_app(llm: LLM, model_name: str, max_queue: int = 256, control: bool = False) -> FastAPI:
    """`max_queue`: client requests held beyond the engine's max_num_seqs before new ones get 503."""
    TurnFormat.of(llm)  # /generate's gate constraint; registered before the engine thread owns the engine
    metrics = ServerMetrics(llm, held=lambda: loop.num_held)
    loop = EngineLoop(llm, llm.config.max_num_seqs + max_queue, on_finished=metrics.observe_outputs,
                      on_trajectory=metrics.observe_trajectory)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        loop.stop()

    app = FastAPI(title="grumem", lifespan=lifespan)
    app.state.server = ServerState(llm, loop, metrics, model_name)
    for router in (openai_api.router, generate_api.router, memory_api.router):
        app.include_router(router)
    if control:
        app.include_router(control_api.router)
    _add_error_handlers(app)

    @app.get("/health")
    async def health(request: Request):
        alive = server(request).loop.is_alive()
        return {"status": "ok"} if alive else error_response(503, "the engine thread has stopped", "unavailable")

    @app.get("/metrics")
    async def metrics_endpoint(request: Request):
        return Response(server(request).metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return _WeightVersionHeader(app)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid(request, e: RequestValidationError):
        return error_response(400, "; ".join(_describe(err) for err in e.errors()))

    @app.exception_handler(ValueError)  # BadRequest, and the engine's or the loop settings' checks
    async def bad(request, e: ValueError):
        return error_response(400, str(e))

    @app.exception_handler(FileNotFoundError)
    async def missing(request, e: FileNotFoundError):
        return error_response(400, str(e))

    @app.exception_handler(ModelNotFound)
    async def not_found(request, e: ModelNotFound):
        return error_response(404, str(e), "not_found_error")

    @app.exception_handler(Overloaded)
    async def overloaded(request, e: Overloaded):
        return error_response(503, f"{e}: retry later", "overloaded", {"Retry-After": str(RETRY_AFTER_S)})

    @app.exception_handler(ClientGone)
    async def gone(request, e: ClientGone):
        return Response(status_code=499)

    @app.exception_handler(RuntimeError)
    async def failed(request, e: RuntimeError):
        return error_response(500, str(e), "server_error")


def _describe(error: dict) -> str:
    if error.get("type") == "json_invalid":
        return f"malformed JSON: {error.get('ctx', {}).get('error', 'cannot parse the body')}"
    where = ".".join(str(part) for part in error.get("loc", ()) if part != "body")
    if not where and error.get("type") in ("model_attributes_type", "dict_type"):
        return "the body must be a JSON object"
    message = error.get("msg", "invalid").removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


class _WeightVersionHeader:
    """ASGI wrapper: every response says which weights produced it (X-Weight-Version)."""

    def __init__(self, app: FastAPI):
        self.app = app
        self.state = app.state

    async def __call__(self, scope, receive, send):
        async def send_with_version(message):
            if message["type"] == "http.response.start":
                version = str(self.state.server.loop.weight_version).encode()
                message["headers"] = [*message.get("headers", []), (b"x-weight-version", version)]
            await send(message)

        await self.app(scope, receive, send_with_version if scope["type"] == "http" else send)


def bind(host: str, port: int) -> socket.socket:
    """A listening socket (port 0: an ephemeral one; see .getsockname())."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


def uvicorn_server(app, log_level: str = "info") -> uvicorn.Server:
    return uvicorn.Server(uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=5))
