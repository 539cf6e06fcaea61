"""What the subcommands share: flags whose defaults come from the config dataclasses, checks that run before the
model loads, the engine and agent they build, and one timed run of a sample set."""
import argparse
import os
import time
from dataclasses import MISSING, fields

from grumem.agent import AgentConfig, paper_preset
from grumem.agent.config import THINKS
from grumem.engine import LLM
from grumem.engine.config import Config
from grumem.engine.models.registry import MODEL_NAMES
from grumem.evaluation import summarize
from grumem.gates import GATES, learned_adapter, trained_settings
from grumem.tasks import TASKS, Sample

# the CLI serves people, so it picks bf16 where this CPU runs it natively; LLM() stays float32 (exact against HF)
CLI_DTYPE = "auto"


def default(cls, name: str):
    field = next(f for f in fields(cls) if f.name == name)
    return field.default if field.default is not MISSING else field.default_factory()


AGENT_DEFAULTS = {name: default(AgentConfig, name) for name in ("think", "chunk_tokens")}  # an adapter may say others


def add_engine_args(p: argparse.ArgumentParser, dtype: str = CLI_DTYPE) -> None:
    g = p.add_argument_group("engine")
    g.add_argument("--model", default=default(Config, "model"), help=f"one of {', '.join(MODEL_NAMES)} (the others "
                   "have random weights) or a Hugging Face checkpoint folder")
    g.add_argument("--device", default=default(Config, "device"), help="cpu, cuda or auto")
    g.add_argument("--dtype", default=dtype, choices=["auto", "float32", "bfloat16", "float16"],
                   help="auto: bfloat16 on CUDA and on CPUs with native bf16 (AVX512-BF16, AMX), else float32")
    g.add_argument("--kv-cache-gb", type=float, default=default(Config, "kv_cache_memory_gb"),
                   help="KV-cache size on the CPU")
    g.add_argument("--max-num-seqs", type=int, default=default(Config, "max_num_seqs"),
                   help="sequences decoded together (documents in flight, at most)")
    g.add_argument("--kv-cache-dtype", choices=["float32", "bfloat16", "float16"],
                   help="default: the model's dtype; bfloat16 halves the cache")
    g.add_argument("--adapter", metavar="DIR", help="a LoRA adapter (grumem train --save), merged into the weights")


def add_agent_args(p: argparse.ArgumentParser, with_mode: bool = True, with_gate_prior: bool = True) -> None:
    g = p.add_argument_group("memory loop")
    if with_mode:
        g.add_argument("--mode", default=default(AgentConfig, "mode"), choices=["grumem", "memagent"])
        g.add_argument("--no-exit-gate", action="store_true", help="grumem: read every chunk (w/o EG)")
    g.add_argument("--layout", choices=["paper", "chunk_first"],
                   help="default: chunk_first with the gate prior (it needs it), else paper")
    g.add_argument("--chunk-tokens", type=int,
                   help=f"default {default(AgentConfig, 'chunk_tokens')}, or what the adapter was trained with")
    g.add_argument("--memory-tokens", type=int, default=default(AgentConfig, "memory_tokens"))
    g.add_argument("--think-tokens", type=int, default=default(AgentConfig, "max_think_tokens"))
    g.add_argument("--think-lines", type=int, default=default(AgentConfig, "max_think_lines") or 0,
                   help="end <think> after this many lines; 0: no line cap")
    g.add_argument("--think", choices=THINKS,
                   help="quote: <think> copies one sentence of the section, token for token (grumem/agent/quote.py); "
                        f"free: the model writes it. Default {default(AgentConfig, 'think')}, or what the adapter "
                        "was trained with")
    if with_gate_prior:
        g.add_argument("--gates", choices=GATES, default="prior",
                       help="prior: the gate prior on the untrained model; own: the model's own gates; learned: "
                            "gates trained with grumem train and installed (python -m grumem.gates DIR)")
        g.add_argument("--gate-prior", type=float, default=default(AgentConfig, "gate_prior_threshold"),
                       metavar="NATS", help="threshold of the gate prior (grumem/agent/gate_prior.py explains it)")
    g.add_argument("--answer-tokens", type=int, default=default(AgentConfig, "answer_tokens"))
    g.add_argument("--constraint", default=default(AgentConfig, "constraint") or "none",
                   choices=["format", "gates", "none"])
    g.add_argument("--paper", action="store_true", help="the paper's sizes (chunk 5000, memory, think and answer "
                                                        "1024), layout and gates (no prior)")
    p.add_argument("--json", action="store_true", help="one JSON record per line instead of tables")


def add_task_args(p: argparse.ArgumentParser, tasks: str, num_samples: int) -> None:
    p.add_argument("--tasks", default=tasks, help=f"comma list of {', '.join(TASKS)}")
    p.add_argument("--num-samples", type=int, default=num_samples, help="questions per task and length")
    p.add_argument("--seed", type=int, default=0, help="which questions (grumem run's are seed 0)")


def check_task_args(args, length_flag: str) -> None:
    """--tasks, --num-samples and the length flag (--length or --lengths)."""
    check_tasks(args.tasks)
    check_positive(args.num_samples, "--num-samples")
    check_positive(getattr(args, length_flag.lstrip("-")), length_flag)


def agent_config(args, mode: str | None = None, exit_gate: bool | None = None) -> AgentConfig:
    adapter = adapter_of(args)
    trained = {**AGENT_DEFAULTS, **(trained_settings(adapter) if adapter else {})}
    given = lambda name: trained[name] if getattr(args, name) is None else getattr(args, name)  # noqa: E731
    settings = dict(
        mode=mode or args.mode, exit_gate=(not args.no_exit_gate) if exit_gate is None else exit_gate,
        constraint=None if args.constraint == "none" else args.constraint, think=given("think"),
    )
    prior = getattr(args, "gates", "own") == "prior"
    settings["layout"] = args.layout or (None if prior else "paper")
    if args.paper:
        return paper_preset(**settings)
    return AgentConfig(**settings, chunk_tokens=given("chunk_tokens"), memory_tokens=args.memory_tokens,
                       max_think_tokens=args.think_tokens, max_think_lines=args.think_lines or None,
                       answer_tokens=args.answer_tokens, gate_prior_threshold=args.gate_prior if prior else None)


def adapter_of(args) -> str | None:
    """The adapter served: --adapter, else the learned gates with --gates learned."""
    if args.adapter is None and getattr(args, "gates", None) == "learned":
        return learned_adapter(args.model)
    return args.adapter


def engine_options(args) -> dict:
    return dict(device=args.device, dtype=args.dtype, kv_cache_memory_gb=args.kv_cache_gb,
                kv_cache_dtype=args.kv_cache_dtype, max_num_seqs=args.max_num_seqs, adapter=adapter_of(args))


def check_engine_args(args) -> None:
    if args.model not in MODEL_NAMES and not os.path.isdir(args.model):
        raise ValueError(f"--model {args.model!r} is neither a known model ({', '.join(MODEL_NAMES)}) nor a folder")
    if args.kv_cache_gb <= 0:
        raise ValueError(f"--kv-cache-gb must be > 0, got {args.kv_cache_gb}")
    if args.adapter is not None and not os.path.isdir(args.adapter):
        raise ValueError(f"--adapter {args.adapter!r} is not a folder")
    Config.from_kwargs(args.model, **engine_options(args))  # device and dtype checks, no model loaded


def check_tasks(tasks: str) -> list[str]:
    names = tasks.split(",")
    unknown = [t for t in names if t not in TASKS]
    if unknown:
        raise ValueError(f"unknown task {unknown[0]!r}; valid tasks: {', '.join(TASKS)}")
    return names


def check_positive(value, flag: str) -> list[int]:
    """A positive int, or a comma list of them."""
    try:
        numbers = [int(x) for x in str(value).split(",")]
    except ValueError:
        raise ValueError(f"{flag} needs positive integers, got {value!r}") from None
    if not numbers or any(n < 1 for n in numbers):
        raise ValueError(f"{flag} needs positive integers, got {value!r}")
    return numbers


def make_llm(args) -> LLM:
    return LLM(args.model, **engine_options(args))


def run_suite(backend, config: AgentConfig, samples: list[Sample], progress: bool) -> tuple[list, dict]:
    """One timed run on a backend (cli/backend.py: this process's engine or a replica pool)."""
    tokens_before, start = backend.tokens_processed(), time.perf_counter()
    trajectories = backend.run(config, samples, progress=progress)
    wall = time.perf_counter() - start
    summary = summarize(trajectories, wall)
    summary["tokens_per_s"] = (backend.tokens_processed() - tokens_before) / wall
    return trajectories, summary


def mode_name(config: AgentConfig) -> str:
    if config.mode == "memagent":
        return "memagent"
    return "grumem w EG" if config.exit_gate else "grumem w/o EG"


def trajectory_record(sample: Sample, t, task: str | None = None) -> dict:
    record = {"question": sample.question, "answer": t.answer, "error": t.error, "turns": len(t.turns),
              "chunks": t.num_chunks, "stop_chunk": t.stop_chunk, "seconds": round(t.seconds, 3)}
    if task:
        record["task"] = task
    if t.score is not None:
        record.update(score=t.score, correct=t.score >= 1.0, answers=sample.answers)
    return record
