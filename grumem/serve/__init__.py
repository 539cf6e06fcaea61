"""grumem serve: an HTTP server (OpenAI-compatible, SGLang's /generate, the memory loop) over one engine thread."""
from grumem.serve.app import bind, build_app, uvicorn_server
from grumem.serve.engine_loop import EngineLoop, Overloaded

__all__ = ["EngineLoop", "Overloaded", "bind", "build_app", "uvicorn_server"]
