"""grumem run: the main job. Generated questions through the memory loop; accuracy, speed and gate statistics."""
import json

from grumem.cli.backend import add_replica_args, check_replica_args, make_backend
from grumem.cli.common import (add_agent_args, add_engine_args, add_task_args, agent_config, check_engine_args,
                               check_task_args, mode_name, run_suite, trajectory_record)
from grumem.evaluation import format_table
from grumem.tasks import make_samples

COLUMNS = ["task", "length", "mode", "questions", "accuracy", "seconds_per_question", "turns", "chunks_read",
           "memory_tokens", "prompt_per_turn", "cached_per_turn", "format_ok", "update_precision", "update_recall",
           "exit_exact", "tokens_per_s"]


def register(commands) -> None:
    p = commands.add_parser("run", help="the main job: a task suite through the memory loop")
    add_task_args(p, "niah_single_1,niah_single_2", 8)
    p.add_argument("--length", type=int, default=4096, help="context tokens per question")
    add_engine_args(p)
    add_agent_args(p)
    add_replica_args(p)
    p.set_defaults(validate=validate, run=run)


def validate(args) -> None:
    check_task_args(args, "--length")
    agent_config(args)
    check_engine_args(args)
    check_replica_args(args)


def run(args) -> None:
    backend = make_backend(args)
    config = agent_config(args)
    rows = []
    for task in args.tasks.split(","):
        samples = make_samples(task, backend.tokenizer, args.length, args.num_samples, args.seed)
        trajectories, summary = run_suite(backend, config, samples, progress=not args.json)
        rows.append({"task": task, "length": args.length, "mode": mode_name(config), **summary})
        if args.json:
            for sample, t in zip(samples, trajectories):
                print(json.dumps(trajectory_record(sample, t, task)))
    print(json.dumps({"summary": rows}) if args.json else format_table(rows, COLUMNS))
