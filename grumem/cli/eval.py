"""grumem eval: the paper-shaped table. memagent vs grumem without and with the exit gate, per task and length,
with the speed-ups over memagent on the same engine."""
import json

from grumem.cli.common import (add_agent_args, add_engine_args, add_task_args, agent_config, check_engine_args,
                               check_positive, check_task_args, make_llm, mode_name, run_suite)
from grumem.evaluation import format_table
from grumem.tasks import make_samples


def register(commands) -> None:
    p = commands.add_parser("eval", help="memagent vs grumem without and with the exit gate")
    add_task_args(p, "niah_single_1", 4)
    p.add_argument("--lengths", default="4096,8192", help="comma list of context lengths in tokens")
    add_engine_args(p)
    add_agent_args(p, with_mode=False)
    p.set_defaults(validate=validate, run=run)


def configs(args) -> list:
    return [agent_config(args, "memagent", False), agent_config(args, "grumem", False),
            agent_config(args, "grumem", True)]


def validate(args) -> None:
    check_task_args(args, "--lengths")
    configs(args)
    check_engine_args(args)


def run(args) -> None:
    llm = make_llm(args)
    rows = []
    for task in args.tasks.split(","):
        for length in check_positive(args.lengths, "--lengths"):
            samples = make_samples(task, llm.tokenizer, length, args.num_samples, args.seed)
            row = {"task": task, "length": length}
            for config in configs(args):
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
