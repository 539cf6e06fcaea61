"""grumem serve: the HTTP server (grumem/serve/) on one engine: OpenAI's /v1/completions and /v1/chat/completions,
SGLang's /generate for RL clients, /v1/memory for the memory loop, /health and /metrics (Prometheus)."""
import sys

from grumem.cli.common import add_engine_args, check_engine_args, make_llm


def register(commands) -> None:
    p = commands.add_parser("serve", help="serve the engine over HTTP (OpenAI-compatible, /generate, /v1/memory)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--served-model-name", help="the model name clients send (default: --model)")
    p.add_argument("--max-queue", type=int, default=256,
                   help="client requests held beyond --max-num-seqs; more get 503 with Retry-After")
    p.add_argument("--enable-control", action="store_true",
                   help="RL control endpoints: /abort_request, /pause_generation, /continue_generation, "
                        "/update_weights_from_disk, /flush_cache")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    add_engine_args(p)
    p.set_defaults(validate=validate, run=run)


def validate(args) -> None:
    if not 0 <= args.port < 65536:
        raise ValueError(f"--port must be in [0, 65535], got {args.port}")
    if args.max_queue < 0:
        raise ValueError(f"--max-queue must be >= 0, got {args.max_queue}")
    check_engine_args(args)
    from grumem.serve import bind  # the web stack loads only for this command

    args.socket = bind(args.host, args.port)  # a port in use fails here, before the model loads


def run(args) -> None:
    from grumem.serve import build_app, uvicorn_server

    llm = make_llm(args)
    name = args.served_model_name or args.model
    app = build_app(llm, name, args.max_queue, args.enable_control)
    host, port = args.socket.getsockname()[:2]
    print(f"grumem serve: {name} on http://{host}:{port} ({llm.config.dtype}, {llm.config.device}); OpenAI "
          "base_url /v1", file=sys.stderr, flush=True)
    uvicorn_server(app, args.log_level).run(sockets=[args.socket])
