"""grumem eval: the paper-shaped table (memagent vs grumem without and with the exit gate, per task and length,
with the speed-ups over memagent on the same engine), or with --compare-gates the gate report of several gate
settings side by side: update balanced accuracy, false yes on distractors, exit timing, chunks read and answer
accuracy, each with its 95% Wilson interval."""
import json
import os
from argparse import Namespace

from grumem.cli.backend import add_replica_args, check_replica_args, make_backend
from grumem.cli.common import (add_agent_args, add_engine_args, add_task_args, agent_config, check_engine_args,
                               check_positive, check_task_args, mode_name, run_suite)
from grumem.evaluation import format_table, gate_report
from grumem.gates import GATES
from grumem.tasks import make_samples

GATE_COLUMNS = ["task", "length", "gates", "questions", "update_balanced_acc", "false_yes_distractor", "exit_exact",
                "exit_early", "exit_late", "chunks_read", "accuracy", "seconds"]


def register(commands) -> None:
    p = commands.add_parser("eval", help="memagent vs grumem without and with the exit gate; or gate settings")
    add_task_args(p, "niah_single_1", 4)
    p.add_argument("--lengths", default="4096,8192", help="comma list of context lengths in tokens")
    p.add_argument("--compare-gates", metavar="LIST",
                   help=f"comma list of gate settings ({', '.join(GATES)}, or an adapter folder: its own gates), "
                        "each a row of the gate report (grumem w EG)")
    add_engine_args(p)
    add_agent_args(p, with_mode=False)
    add_replica_args(p)
    p.set_defaults(validate=validate, run=run)


def configs(args) -> list:
    return [agent_config(args, "memagent", False), agent_config(args, "grumem", False),
            agent_config(args, "grumem", True)]


def gate_settings(args) -> list[tuple[str, Namespace]]:
    """(row name, the arguments of that setting) per --compare-gates entry."""
    settings = []
    for entry in args.compare_gates.split(","):
        if entry in GATES:
            settings.append((entry, Namespace(**{**vars(args), "gates": entry})))
        elif os.path.isdir(entry):
            settings.append((entry, Namespace(**{**vars(args), "gates": "own", "adapter": entry})))
        else:
            raise ValueError(f"--compare-gates entry {entry!r} is neither one of {', '.join(GATES)} nor a folder")
    return settings


def validate(args) -> None:
    check_task_args(args, "--lengths")
    configs(args)
    check_engine_args(args)
    check_replica_args(args)
    if args.compare_gates:
        for _, setting in gate_settings(args):
            agent_config(setting, "grumem", True)
            check_engine_args(setting)


def run(args) -> None:
    rows = compare_gates(args) if args.compare_gates else compare_modes(args)
    if not args.json:
        print(format_table(rows, GATE_COLUMNS if args.compare_gates else list(rows[0])))


def compare_modes(args) -> list[dict]:
    backend = make_backend(args)
    rows = []
    for task in args.tasks.split(","):
        for length in check_positive(args.lengths, "--lengths"):
            samples = make_samples(task, backend.tokenizer, length, args.num_samples, args.seed)
            row = {"task": task, "length": length}
            for config in configs(args):
                _, summary = run_suite(backend, config, samples, progress=not args.json)
                name = mode_name(config)
                row[f"{name} acc"], row[f"{name} s"] = summary["accuracy"], summary["wall_seconds"]
            base = row["memagent s"]
            row["speedup w/o EG"], row["speedup w EG"] = base / row["grumem w/o EG s"], base / row["grumem w EG s"]
            rows.append(_emit(row, args))
    return rows


def compare_gates(args) -> list[dict]:
    rows = []
    for name, setting in gate_settings(args):
        backend, config = make_backend(setting), agent_config(setting, "grumem", True)
        for task in args.tasks.split(","):
            for length in check_positive(args.lengths, "--lengths"):
                samples = make_samples(task, backend.tokenizer, length, args.num_samples, args.seed)
                trajectories, summary = run_suite(backend, config, samples, progress=not args.json)
                rows.append(_emit({"task": task, "length": length, "gates": name, "questions": len(samples),
                                   **gate_report(trajectories), "seconds": summary["wall_seconds"]}, args))
    return rows


def _emit(row: dict, args) -> dict:
    if args.json:
        print(json.dumps(row))
    return row
