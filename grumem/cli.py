"""The `grumem` command line: run (the main job), ask (your own documents), eval (the paper-shaped table).

  grumem run                                  NIAH + HotpotQA on the embedded SmolLM2, gated loop with exit gate
  grumem ask --doc FILE --question "..."      one document; --batch FILE.jsonl for many at once
  grumem eval --lengths 4096,8192             memagent vs grumem without and with the exit gate, with speed-ups
  grumem train --steps 20 --save DIR          Multi-Conv DAPO: the loop learns its gates (RL, GRU-Mem's rewards)
"""
import argparse
import json
import sys
import time

from grumem.engine import LLM, AgentConfig, MemoryAgent, paper_preset
from grumem.engine.models.registry import DEFAULT_MODEL
from grumem.evaluation import format_cell, format_table, summarize
from grumem.tasks import TASKS, Sample, make_samples, sample_stream

TRAIN_SEED = 10_000  # training questions come from seeds 10000 + --seed: never `grumem run`'s (seed 0)
EVAL_COLUMNS = ["accuracy", "chunks_read", "update_precision", "update_recall", "exit_early", "exit_exact"]
TRAIN_COLUMNS = ["step", "reward", "outcome", "format", "update_acc", "exit_exact", "chunks_read", "groups", "rows",
                 "loss", "clip_frac", "engine_logprob_gap", "rollout_s", "train_s"]
RUN_COLUMNS = ["task", "length", "mode", "questions", "accuracy", "seconds_per_question", "turns", "chunks_read",
               "memory_tokens", "format_ok", "update_precision", "update_recall", "exit_exact", "tokens_per_s"]


def add_engine_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("engine")
    g.add_argument("--model", default=DEFAULT_MODEL, help="registry name or Hugging Face checkpoint folder")
    g.add_argument("--device", default="auto", help="cpu, cuda or auto")
    g.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                   help="auto: bfloat16 on CUDA and on CPUs with native bf16 (AVX512-BF16, AMX), else float32")
    g.add_argument("--kv-cache-gb", type=float, default=4.0, help="KV-cache size on the CPU")
    g.add_argument("--kv-cache-dtype", choices=["float32", "bfloat16", "float16"],
                   help="default: the model's dtype; bfloat16 halves the cache")


def add_agent_args(p: argparse.ArgumentParser, with_mode: bool = True, with_gate_prior: bool = True) -> None:
    g = p.add_argument_group("memory loop")
    if with_mode:
        g.add_argument("--mode", default="grumem", choices=["grumem", "memagent"])
        g.add_argument("--no-exit-gate", action="store_true", help="grumem: read every chunk (w/o EG)")
    g.add_argument("--layout", choices=["paper", "chunk_first"],
                   help="default: chunk_first for grumem (the gate prior needs it), paper for memagent")
    g.add_argument("--chunk-tokens", type=int, default=1024)
    g.add_argument("--memory-tokens", type=int, default=256)
    g.add_argument("--think-tokens", type=int, default=32)
    g.add_argument("--think-lines", type=int, default=1, help="end <think> after this many lines; 0: no line cap")
    if with_gate_prior:
        g.add_argument("--gate-prior", type=float, default=10.0, metavar="NATS",
                       help="threshold of the gate prior (the question's log-likelihood ratio with and without the "
                            "section, added to the gate logits); for models with untrained gates")
        g.add_argument("--no-gate-prior", action="store_true", help="the model's own gates only (as in the paper)")
    g.add_argument("--answer-tokens", type=int, default=48)
    g.add_argument("--constraint", default="format", choices=["format", "gates", "none"])
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--paper", action="store_true", help="the paper's sizes (chunk 5000, memory, think and answer "
                                                        "1024), layout and gates (no prior)")
    p.add_argument("--json", action="store_true", help="one JSON record per line instead of tables")


def agent_config(args, mode: str | None = None, exit_gate: bool | None = None) -> AgentConfig:
    settings = dict(
        mode=mode or args.mode, exit_gate=(not args.no_exit_gate) if exit_gate is None else exit_gate,
        constraint=None if args.constraint == "none" else args.constraint,
    )
    if args.layout:
        settings["layout"] = args.layout
    if args.paper:
        return paper_preset(**settings)
    return AgentConfig(**settings, chunk_tokens=args.chunk_tokens, memory_tokens=args.memory_tokens,
                       max_think_tokens=args.think_tokens, max_think_lines=args.think_lines or None,
                       answer_tokens=args.answer_tokens,
                       gate_prior_threshold=None if getattr(args, "no_gate_prior", True) else args.gate_prior)


def make_llm(args) -> LLM:
    return LLM(args.model, device=args.device, dtype=args.dtype, kv_cache_memory_gb=args.kv_cache_gb,
               kv_cache_dtype=args.kv_cache_dtype)


def run_suite(llm: LLM, config: AgentConfig, samples: list[Sample], progress: bool) -> tuple[list, dict]:
    stats = llm.stats
    tokens_before, start = stats.num_prefill_tokens + stats.num_decode_tokens, time.perf_counter()
    trajectories = MemoryAgent(llm, config).run(samples, progress=progress)
    wall = time.perf_counter() - start
    summary = summarize(trajectories, wall)
    summary["tokens_per_s"] = (stats.num_prefill_tokens + stats.num_decode_tokens - tokens_before) / wall
    return trajectories, summary


def mode_name(config: AgentConfig) -> str:
    if config.mode == "memagent":
        return "memagent"
    return "grumem w EG" if config.exit_gate else "grumem w/o EG"


def cmd_run(args) -> None:
    llm = make_llm(args)
    config = agent_config(args)
    rows = []
    for task in args.tasks.split(","):
        samples = make_samples(task, llm.tokenizer, args.length, args.num_samples, args.seed)
        trajectories, summary = run_suite(llm, config, samples, progress=not args.json)
        rows.append({"task": task, "length": args.length, "mode": mode_name(config), **summary})
        if args.json:
            for sample, t in zip(samples, trajectories):
                print(json.dumps(trajectory_record(sample, t, task)))
    print(json.dumps({"summary": rows}) if args.json else format_table(rows, RUN_COLUMNS))


def trajectory_record(sample: Sample, t, task: str | None = None) -> dict:
    record = {"question": sample.question, "answer": t.answer, "error": t.error, "turns": len(t.turns),
              "chunks": t.num_chunks, "stop_chunk": t.stop_chunk, "seconds": round(t.seconds, 3)}
    if task:
        record["task"] = task
    if t.score is not None:
        record.update(score=t.score, correct=t.score >= 1.0, answers=sample.answers)
    return record


def read_document(path: str) -> str:
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from e
    except OSError as e:
        raise ValueError(f"{path}: cannot read ({e.strerror})") from e


def load_ask_items(args) -> list[dict]:
    if args.doc:
        if not args.question:
            raise SystemExit("grumem ask: --doc needs --question")
        return [{"document": args.doc, "question": args.question, "answers": args.answers or []}]
    items = []
    with open(args.batch, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    items.append(json.loads(line))
                except json.JSONDecodeError as e:
                    items.append({"error": f"line {n}: not JSON ({e.msg})"})
    return items


def ask_sample(llm: LLM, item: dict, index: int) -> Sample:
    if "error" in item:
        raise ValueError(item["error"])
    if not isinstance(item.get("question"), str) or not item["question"].strip():
        raise ValueError("missing \"question\"")
    if "context" in item:
        text = item["context"]
    elif "document" in item:
        text = read_document(item["document"])
    else:
        raise ValueError("needs \"document\" (a file path) or \"context\" (the text)")
    ids = llm.tokenizer.encode(text, add_special_tokens=False)
    return Sample("ask", index, ids, item["question"], list(item.get("answers") or []), [], "sub_em")


def cmd_ask(args) -> None:
    items = load_ask_items(args)
    llm = make_llm(args)
    samples, errors = [], {}
    for i, item in enumerate(items):
        try:
            samples.append(ask_sample(llm, item, i))
        except ValueError as e:
            errors[i] = str(e)
    trajectories = iter(MemoryAgent(llm, agent_config(args)).run(samples, progress=not args.json))
    by_index = {s.index: (s, next(trajectories)) for s in samples}
    for i, item in enumerate(items):
        if i in errors:
            record = {"question": item.get("question"), "answer": None, "error": errors[i]}
        else:
            record = trajectory_record(*by_index[i])
        if args.json:
            print(json.dumps(record))
        else:
            verdict = "" if "correct" not in record else ("  [correct]" if record["correct"] else "  [wrong]")
            print(f"Q: {record['question']}\nA: {record['answer'] if not record['error'] else 'ERROR: ' + record['error']}"
                  f"{verdict}\n")


def cmd_eval(args) -> None:
    llm = make_llm(args)
    configs = [agent_config(args, "memagent", False), agent_config(args, "grumem", False),
               agent_config(args, "grumem", True)]
    rows = []
    for task in args.tasks.split(","):
        for length in (int(x) for x in args.lengths.split(",")):
            samples = make_samples(task, llm.tokenizer, length, args.num_samples, args.seed)
            row = {"task": task, "length": length}
            for config in configs:
                _, summary = run_suite(llm, config, samples, progress=not args.json)
                name = mode_name(config)
                row[f"{name} acc"], row[f"{name} s"] = summary["accuracy"], summary["wall_seconds"]
            base = row["memagent s"]
            row["speedup w/o EG"], row["speedup w EG"] = base / row["grumem w/o EG s"], base / row["grumem w EG s"]
            rows.append(row)
            if args.json:
                print(json.dumps(row))
    if not args.json:
        print(format_table(rows, list(rows[0])))


def print_held_out_eval(llm: LLM, config: AgentConfig, samples: list[Sample], step: int, as_json: bool) -> None:
    """A greedy run of the weights the engine now serves."""
    _, summary = run_suite(llm, config, samples, progress=False)
    report = {k: summary[k] for k in EVAL_COLUMNS}
    print(json.dumps({"eval_after_step": step, **report}) if as_json else f"eval after step {step}: " + ", ".join(
        f"{k} {format_cell(v)}" for k, v in report.items()), flush=True)


def cmd_train(args) -> None:
    from grumem.trainer import DAPOTrainer, TrainerConfig

    llm = make_llm(args)
    config = TrainerConfig(group_size=args.group_size, groups_per_step=args.groups_per_step, lr=args.lr,
                           mini_batches=args.mini_batches, alpha=args.alpha, outcome=args.outcome, kl_coef=args.kl_coef,
                           temperature=args.temperature, autocast=args.autocast, tis_cap=args.tis_cap,
                           seed=args.seed)
    trainer = DAPOTrainer(llm, agent_config(args), config)
    stream = sample_stream(args.task, llm.tokenizer, args.length, TRAIN_SEED + args.seed)
    held_out = []
    if args.eval_every:
        held_out = make_samples(args.task, llm.tokenizer, args.length, args.eval_samples, args.seed)
    for n in range(args.steps + 1):
        if held_out and (n % args.eval_every == 0 or n == args.steps):
            print_held_out_eval(llm, trainer.agent_config, held_out, n, args.json)
        if n == args.steps:
            break
        stats = trainer.step(stream)
        if args.json:
            print(json.dumps(stats), flush=True)
        else:
            table = format_table([stats], TRAIN_COLUMNS).splitlines()
            print("\n".join(table if n == 0 else table[2:]), flush=True)
    if args.save:
        trainer.policy.save(args.save, llm.tokenizer)
        if not args.json:
            print(f"saved to {args.save}: grumem run --model {args.save} --no-gate-prior")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="grumem", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="the main job: a task suite through the memory loop")
    run.add_argument("--tasks", default="niah_single_1,niah_single_2", help=f"comma list of {', '.join(TASKS)}")
    run.add_argument("--length", type=int, default=4096, help="context tokens per question")
    run.add_argument("--num-samples", type=int, default=8)
    add_engine_args(run)
    add_agent_args(run)
    run.set_defaults(func=cmd_run)

    ask = commands.add_parser("ask", help="answer questions about your own UTF-8 documents")
    source = ask.add_mutually_exclusive_group(required=True)
    source.add_argument("--doc", help="a UTF-8 text file")
    source.add_argument("--batch", help='JSONL: {"document": path | "context": text, "question": ..., "answers": [...]}')
    ask.add_argument("--question")
    ask.add_argument("--answers", nargs="*", help="gold answers, to score the answer")
    add_engine_args(ask)
    add_agent_args(ask)
    ask.set_defaults(func=cmd_ask)

    ev = commands.add_parser("eval", help="memagent vs grumem without and with the exit gate")
    ev.add_argument("--tasks", default="niah_single_1")
    ev.add_argument("--lengths", default="4096,8192")
    ev.add_argument("--num-samples", type=int, default=4)
    add_engine_args(ev)
    add_agent_args(ev, with_mode=False)
    ev.set_defaults(func=cmd_eval)

    train = commands.add_parser("train", help="Multi-Conv DAPO on the memory loop (RL; no gate prior)")
    train.add_argument("--task", default="niah_single_1", help=f"one of {', '.join(TASKS)}")
    train.add_argument("--length", type=int, default=2048, help="context tokens per question")
    train.add_argument("--steps", type=int, default=10)
    train.add_argument("--group-size", type=int, default=8, help="rollouts per question (paper: 16)")
    train.add_argument("--groups-per-step", type=int, default=4, help="questions per rollout batch")
    train.add_argument("--mini-batches", type=int, default=1, help="optimizer updates per rollout batch")
    train.add_argument("--lr", type=float, default=1e-6)
    train.add_argument("--alpha", type=float, default=0.9, help="trajectory vs turn advantage")
    train.add_argument("--outcome", default="boxed", choices=["boxed", "metric"],
                       help="boxed: exact match of the \\boxed{} answer (paper); metric: the task's metric on the "
                            "answer, boxed or not (SmolLM2 never boxes)")
    train.add_argument("--kl-coef", type=float, default=0.0, help="k3 KL to the initial weights")
    train.add_argument("--temperature", type=float, default=1.0, help="rollout temperature")
    train.add_argument("--tis-cap", type=float, metavar="C",
                       help="truncated importance sampling: weight tokens by min(pi_old / pi_engine, C), e.g. 2")
    train.add_argument("--autocast", choices=["bfloat16", "float16"],
                       help="forward/backward under autocast over fp32 weights (bf16: 2.4-3x faster on AVX512-BF16)")
    train.add_argument("--save", metavar="DIR", help="write the trained weights as a Hugging Face checkpoint")
    train.add_argument("--eval-every", type=int, default=0, metavar="N",
                       help="greedy run on held-out questions (grumem run's, seed --seed) before training, every N "
                            "steps and at the end; 0: never")
    train.add_argument("--eval-samples", type=int, default=8)
    add_engine_args(train)
    add_agent_args(train, with_gate_prior=False)
    train.set_defaults(func=cmd_train, dtype="float32")  # rollouts in the trainer's precision

    args = parser.parse_args(argv)
    try:
        args.func(args)
    except (ValueError, FileNotFoundError, ModuleNotFoundError) as e:
        sys.exit(f"grumem {args.command}: {e}")
