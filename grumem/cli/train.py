"""grumem train: the model learns its own gates. A supervised warm start on turns labelled from the training
documents' evidence (trainer/warm_start.py), then Multi-Conv DAPO (RL with GRU-Mem's rewards, no gate prior); LoRA
on every linear layer or full fine-tuning; greedy held-out evaluations with the gate report; a JSONL log and the
learning curve as a PNG; the adapter (or checkpoint) saved."""
import json
from pathlib import Path

from grumem.agent import AgentConfig, MemoryAgent
from grumem.cli.common import (add_agent_args, add_engine_args, agent_config, check_engine_args, check_positive,
                               check_tasks, default, make_llm)
from grumem.evaluation import format_cell, format_table, gate_report
from grumem.gates import SETTINGS_FILE
from grumem.tasks import TASKS, make_samples, sample_stream
from grumem.tasks.hard_niah import training_stream
from grumem.trainer import DAPOTrainer, Policy, TrainerConfig
from grumem.trainer.config import AUTOCAST
from grumem.trainer.curve import plot_curve
from grumem.trainer.dapo import checkpoint_of
from grumem.trainer.policy import LoraSettings
from grumem.trainer.rewards import OUTCOMES
from grumem.trainer.warm_start import THINKS, WarmStart, WarmStartConfig

TRAIN_SEED = 10_000  # training documents come from seeds 10000 + --seed and the train split: never evaluated on
TRUNCATED = {"warm_start": ("warm_start",), "rl": ("rl",), "both": ("warm_start", "rl"), "none": ()}
GATE_MIX = "gate_training"  # hard_niah.TRAINING_MIX: plain, paraphrased, distractor and two-needle documents
WARM_COLUMNS = ["step", "loss", "text_nll", "gate_nll", "gate_acc", "quote_acc", "grad_norm", "rows", "seconds"]
RL_COLUMNS = ["step", "reward", "outcome", "format", "update_acc", "exit_exact", "chunks_read", "groups", "rows",
              "loss", "clip_frac", "engine_logprob_gap", "rollout_s", "train_s"]
# a step sized for a CPU session: the paper's (and TrainerConfig's) 16 rollouts x 8 questions are 4x the rollouts
CPU_STEP = {"group_size": 8, "groups_per_step": 4}
TRAINER_FLAGS = {  # flag -> TrainerConfig field
    "--group-size": "group_size", "--groups-per-step": "groups_per_step", "--mini-batches": "mini_batches",
    "--lr": "lr", "--alpha": "alpha", "--outcome": "outcome", "--kl-coef": "kl_coef", "--temperature": "temperature",
    "--tis-cap": "tis_cap", "--autocast": "autocast",
}
WARM_FLAGS = {"--warm-start-lr": "lr", "--documents-per-step": "documents_per_step", "--gate-weight": "gate_weight",
              "--thinks": "thinks"}
HELP = {
    "--group-size": "rollouts per question (paper: 16)", "--groups-per-step": "questions per rollout batch",
    "--mini-batches": "optimizer updates per rollout batch", "--alpha": "trajectory vs turn advantage",
    "--lr": "RL learning rate", "--outcome": "boxed: exact match of the \\boxed{} answer (paper); metric: the task's "
                                             "metric on the answer, boxed or not",
    "--kl-coef": "k3 KL to the initial weights", "--temperature": "rollout temperature",
    "--tis-cap": "truncated importance sampling: weight tokens by min(pi_old / pi_engine, C), e.g. 2",
    "--autocast": "forward/backward under autocast over fp32 weights (bf16: 2.4-3x faster on AVX512-BF16)",
    "--warm-start-lr": "warm-start learning rate", "--documents-per-step": "warm start: documents per update",
    "--gate-weight": "warm start: weight of the gate choices' loss against the text's",
    "--thinks": "warm start: labelled (quotes written from the labels) or own (the model's own thoughts, no loss "
                "on them: the gates learn on what the model writes itself)",
}
CHOICES = {"--outcome": list(OUTCOMES), "--autocast": [name for name in AUTOCAST if name], "--thinks": list(THINKS)}


def register(commands) -> None:
    p = commands.add_parser("train", help="the loop learns its gates: warm start, then Multi-Conv DAPO")
    p.add_argument("--task", default=GATE_MIX, help=f"training documents: {GATE_MIX} (the mix of plain, "
                   f"paraphrased, distractor and two-needle needles) or one of {', '.join(TASKS)}")
    p.add_argument("--length", type=int, default=2048, help="context tokens per training document")
    p.add_argument("--warm-start-steps", type=int, default=0, help="supervised steps on labelled turns, first")
    p.add_argument("--steps", type=int, default=10, help="RL steps, after the warm start")
    p.add_argument("--lora-rank", type=int, default=8, help="LoRA on every linear layer; 0: full fine-tuning")
    p.add_argument("--truncated-grad", choices=list(TRUNCATED), default="warm_start",
                   help="the stages whose passes take no gradient through the prompts (2-3x cheaper; "
                        "trainer/policy.py); the others are exact")
    for flag, name in TRAINER_FLAGS.items():
        add_config_flag(p, flag, CPU_STEP.get(name, default(TrainerConfig, name)))
    for flag, name in WARM_FLAGS.items():
        add_config_flag(p, flag, default(WarmStartConfig, name))
    p.add_argument("--seed", type=int, default=default(TrainerConfig, "seed"),
                   help=f"training documents are seed {TRAIN_SEED} + this (train split); held-out ones seed this")
    p.add_argument("--save", metavar="DIR", help="write the adapter (LoRA) or the checkpoint (full)")
    p.add_argument("--log", metavar="FILE", help="every step and evaluation as a JSON line")
    p.add_argument("--plot", metavar="PNG", help="the learning curve (needs --eval-every)")
    p.add_argument("--eval-every", type=int, default=0, metavar="N",
                   help="greedy held-out run before training, every N steps and at the end; 0: never")
    p.add_argument("--eval-tasks", default="niah_single_2,niah_paraphrase,niah_distractor",
                   help="held-out tasks (eval split, seed --seed) at --length")
    p.add_argument("--eval-samples", type=int, default=8)
    add_engine_args(p, dtype="float32")  # rollouts in the trainer's precision
    add_agent_args(p, with_gate_prior=False)
    p.set_defaults(validate=validate, run=run)


def add_config_flag(p, flag: str, value) -> None:
    kind = type(value) if value is not None else str if flag in CHOICES else float  # None: an optional number
    p.add_argument(flag, type=kind, default=value, choices=CHOICES.get(flag), help=HELP.get(flag))


def trainer_config(args) -> TrainerConfig:
    return TrainerConfig(**{name: getattr(args, name) for name in TRAINER_FLAGS.values()}, seed=args.seed,
                         prompt_grad="rl" not in TRUNCATED[args.truncated_grad])


def warm_start_config(args) -> WarmStartConfig:
    return WarmStartConfig(**{name: getattr(args, flag.lstrip("-").replace("-", "_")) for flag, name in
                              WARM_FLAGS.items()}, prompt_grad="warm_start" not in TRUNCATED[args.truncated_grad],
                           seed=args.seed)


def validate(args) -> None:
    if args.task != GATE_MIX:
        check_tasks(args.task)
    check_tasks(args.eval_tasks)
    check_positive(args.length, "--length")
    check_positive(args.eval_samples, "--eval-samples")
    if min(args.steps, args.warm_start_steps, args.eval_every, args.lora_rank) < 0:
        raise ValueError("--steps, --warm-start-steps, --eval-every and --lora-rank must be >= 0")
    if args.plot and not args.eval_every:
        raise ValueError("--plot draws the held-out evaluations: give --eval-every too")
    if args.adapter and not args.lora_rank:
        raise ValueError("--adapter goes on training a LoRA adapter: it needs --lora-rank > 0")
    trainer_config(args)
    warm_start_config(args)
    agent_config(args)
    check_engine_args(args)


class Reporter:
    """Prints steps and evaluations, logs them as JSON lines, and keeps them for the plot."""

    def __init__(self, args):
        self.as_json, self.records, self.log = args.json, [], open(args.log, "w") if args.log else None
        self.printed_header = set()

    def step(self, stage: str, stats: dict, columns: list[str]) -> None:
        if self._record({"stage": stage, **stats}):
            return
        table = format_table([stats], columns).splitlines()
        print("\n".join(table if stage not in self.printed_header else table[2:]), flush=True)
        self.printed_header.add(stage)

    def evaluation(self, stage: str, step: int, report: dict) -> None:
        if self._record({"stage": stage, "eval_after_step": step, **report}):
            return
        cells = ", ".join(f"{k} {format_cell(v)}" for k, v in report.items())
        print(f"held-out eval, {stage} step {step}: {cells}", flush=True)
        self.printed_header.discard(stage)  # the step table starts over under the evaluation

    def _record(self, record: dict) -> bool:
        """Keeps and logs the record; prints it as JSON and returns True under --json."""
        self.records.append(record)
        if self.log:
            self.log.write(json.dumps(record) + "\n")
            self.log.flush()
        if self.as_json:
            print(json.dumps(record), flush=True)
        return self.as_json


def held_out_report(llm, config, samples) -> dict:
    """The gate report of a greedy run of the weights the engine now serves, over every held-out task."""
    return gate_report(MemoryAgent(llm, config).run(samples))


def run(args) -> None:
    llm = make_llm(args)
    config = agent_config(args)
    lora = LoraSettings(args.lora_rank, 2.0 * args.lora_rank) if args.lora_rank else None
    policy = Policy(checkpoint_of(llm), str(llm.device), AUTOCAST[args.autocast], lora=lora, adapter=args.adapter)
    held_out = []
    if args.eval_every:
        held_out = [s for task in args.eval_tasks.split(",")
                    for s in make_samples(task, llm.tokenizer, args.length, args.eval_samples, args.seed)]
    reporter = Reporter(args)
    stages = [(stage, steps) for stage, steps in (("warm_start", args.warm_start_steps), ("rl", args.steps)) if steps]
    for k, (stage, steps) in enumerate(stages):
        if stage == "warm_start":
            trainer = WarmStart(llm, policy, config, warm_start_config(args))
            documents = training_stream(llm.tokenizer, args.length, TRAIN_SEED + args.seed)
            columns = WARM_COLUMNS
        else:
            trainer = DAPOTrainer(llm, config, trainer_config(args), policy)
            documents = (training_stream(llm.tokenizer, args.length, TRAIN_SEED + args.seed + 1) if args.task == GATE_MIX
                         else sample_stream(args.task, llm.tokenizer, args.length, TRAIN_SEED + args.seed))
            columns = RL_COLUMNS
        for n in range(steps + 1):
            if held_out and (n % args.eval_every == 0 or n == steps) and (n or not k):  # once between stages
                reporter.evaluation(stage, n, held_out_report(llm, config, held_out))
                save(args, policy, llm, config)  # a long run killed later keeps the weights evaluated last
            if n < steps:
                reporter.step(stage, trainer.step(documents), columns)
    if args.plot:
        plot_curve(reporter.records, args.plot)
    if args.save:
        save(args, policy, llm, config)
        if not args.json:
            flags = f"--adapter {args.save}" if policy.is_lora else f"--model {args.save}"
            print(f"saved to {args.save}: grumem run {flags} --gates own")


def save(args, policy: Policy, llm, config: AgentConfig) -> None:
    """The weights, and the loop settings they were trained under (the CLI's defaults wherever they are used)."""
    if args.save:
        policy.save(args.save, None if policy.is_lora else llm.tokenizer)
        settings = {"think": config.think, "chunk_tokens": config.chunk_tokens}
        (Path(args.save) / SETTINGS_FILE).write_text(json.dumps(settings) + "\n", encoding="utf-8")
