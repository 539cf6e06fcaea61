"""grumem train: Multi-Conv DAPO on the memory loop (RL with GRU-Mem's rewards; no gate prior), a line per step,
greedy held-out evaluations, the trained weights saved as a Hugging Face checkpoint."""
import json

from grumem.cli.common import (add_agent_args, add_engine_args, agent_config, check_engine_args, check_positive,
                               check_tasks, default, make_llm, run_suite)
from grumem.evaluation import format_cell, format_table
from grumem.tasks import TASKS, make_samples, sample_stream
from grumem.trainer import DAPOTrainer, TrainerConfig
from grumem.trainer.config import AUTOCAST
from grumem.trainer.rewards import OUTCOMES

TRAIN_SEED = 10_000  # training questions come from seeds 10000 + --seed: never `grumem run`'s (seed 0)
EVAL_COLUMNS = ["accuracy", "chunks_read", "update_precision", "update_recall", "exit_early", "exit_exact"]
COLUMNS = ["step", "reward", "outcome", "format", "update_acc", "exit_exact", "chunks_read", "groups", "rows",
           "loss", "clip_frac", "engine_logprob_gap", "rollout_s", "train_s"]
# a step sized for a CPU session: the paper's (and TrainerConfig's) 16 rollouts x 8 questions are 4x the rollouts
CPU_STEP = {"group_size": 8, "groups_per_step": 4}
TRAINER_FLAGS = {  # flag -> TrainerConfig field
    "--group-size": "group_size", "--groups-per-step": "groups_per_step", "--mini-batches": "mini_batches",
    "--lr": "lr", "--alpha": "alpha", "--outcome": "outcome", "--kl-coef": "kl_coef", "--temperature": "temperature",
    "--tis-cap": "tis_cap", "--autocast": "autocast",
}
HELP = {
    "--group-size": "rollouts per question (paper: 16)", "--groups-per-step": "questions per rollout batch",
    "--mini-batches": "optimizer updates per rollout batch", "--alpha": "trajectory vs turn advantage",
    "--outcome": "boxed: exact match of the \\boxed{} answer (paper); metric: the task's metric on the answer, "
                 "boxed or not (SmolLM2 never boxes)",
    "--kl-coef": "k3 KL to the initial weights", "--temperature": "rollout temperature",
    "--tis-cap": "truncated importance sampling: weight tokens by min(pi_old / pi_engine, C), e.g. 2",
    "--autocast": "forward/backward under autocast over fp32 weights (bf16: 2.4-3x faster on AVX512-BF16)",
}
CHOICES = {"--outcome": list(OUTCOMES), "--autocast": [name for name in AUTOCAST if name]}


def register(commands) -> None:
    p = commands.add_parser("train", help="Multi-Conv DAPO on the memory loop (RL; no gate prior)")
    p.add_argument("--task", default="niah_single_1", help=f"one of {', '.join(TASKS)}")
    p.add_argument("--length", type=int, default=2048, help="context tokens per question")
    p.add_argument("--steps", type=int, default=10)
    for flag, name in TRAINER_FLAGS.items():
        value = CPU_STEP.get(name, default(TrainerConfig, name))
        kind = type(value) if value is not None else str if flag in CHOICES else float  # None: an optional number
        p.add_argument(flag, type=kind, default=value, choices=CHOICES.get(flag), help=HELP.get(flag))
    p.add_argument("--seed", type=int, default=default(TrainerConfig, "seed"),
                   help=f"training questions are seed {TRAIN_SEED} + this; held-out ones are seed this")
    p.add_argument("--save", metavar="DIR", help="write the trained weights as a Hugging Face checkpoint")
    p.add_argument("--eval-every", type=int, default=0, metavar="N",
                   help="greedy run on held-out questions (grumem run's, seed --seed) before training, every N "
                        "steps and at the end; 0: never")
    p.add_argument("--eval-samples", type=int, default=8)
    add_engine_args(p, dtype="float32")  # rollouts in the trainer's precision
    add_agent_args(p, with_gate_prior=False)
    p.set_defaults(validate=validate, run=run)


def trainer_config(args) -> TrainerConfig:
    return TrainerConfig(**{name: getattr(args, name) for name in TRAINER_FLAGS.values()}, seed=args.seed)


def validate(args) -> None:
    check_tasks(args.task)
    check_positive(args.length, "--length")
    check_positive(args.eval_samples, "--eval-samples")
    if args.steps < 0 or args.eval_every < 0:
        raise ValueError(f"--steps and --eval-every must be >= 0, got {args.steps}, {args.eval_every}")
    trainer_config(args)
    agent_config(args)
    check_engine_args(args)


def print_held_out_eval(llm, config, samples, step: int, as_json: bool) -> None:
    """A greedy run of the weights the engine now serves."""
    _, summary = run_suite(llm, config, samples, progress=False)
    report = {k: summary[k] for k in EVAL_COLUMNS}
    print(json.dumps({"eval_after_step": step, **report}) if as_json else f"eval after step {step}: " + ", ".join(
        f"{k} {format_cell(v)}" for k, v in report.items()), flush=True)


def run(args) -> None:
    llm = make_llm(args)
    trainer = DAPOTrainer(llm, agent_config(args), trainer_config(args))
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
            table = format_table([stats], COLUMNS).splitlines()
            print("\n".join(table if n == 0 else table[2:]), flush=True)
    if args.save:
        trainer.policy.save(args.save, llm.tokenizer)
        if not args.json:
            print(f"saved to {args.save}: grumem run --model {args.save} --no-gate-prior")
