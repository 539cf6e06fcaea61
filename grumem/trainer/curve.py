"""The learning curve of a `grumem train` run, from its records: the training batches' gate accuracy (warm start:
teacher-forced, on documents not trained on before; RL: update-gate accuracy of the rollouts) and the held-out
evaluations with their 95% intervals, against the step counted over both stages.

    python -m grumem.trainer.curve LOG.jsonl CURVE.png     # from the --log of a run (also one that was stopped)
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HELD_OUT = {"update_balanced_acc": "update balanced accuracy", "exit_exact": "exit exact", "accuracy": "answer accuracy",
            "false_yes_distractor": "false yes on distractors"}


def _global_steps(records: list[dict]) -> list[int]:
    """Each record's step counted from the start of the run (the RL steps follow the warm start's)."""
    offset, last, out = 0, {}, []
    for record in records:
        stage = record["stage"]
        if stage not in last and last:
            offset = max(last.values())
        step = record.get("step", record.get("eval_after_step"))
        last[stage] = offset + step
        out.append(offset + step)
    return out


def plot_curve(records: list[dict], path: str) -> None:
    steps = _global_steps(records)
    fig, (train_ax, eval_ax) = plt.subplots(1, 2, figsize=(11, 4), sharex=True)
    for stage, key, label in (("warm_start", "gate_acc", "warm start: gate accuracy (teacher-forced)"),
                              ("warm_start", "quote_acc", "warm start: quote choices (teacher-forced)"),
                              ("rl", "update_acc", "RL: update-gate accuracy of the rollouts")):
        points = [(s, r[key]) for s, r in zip(steps, records) if r["stage"] == stage and r.get(key) is not None]
        if points:
            train_ax.plot(*zip(*points), ".-", label=label, alpha=0.7)
    train_ax.set(title="training batches (fresh documents)", xlabel="step", ylim=(0, 1.02))
    train_ax.legend(fontsize=8)
    evals = [(s, r) for s, r in zip(steps, records) if "eval_after_step" in r]
    for key, label in HELD_OUT.items():
        points = [(s, r[key]) for s, r in evals if r.get(key) is not None]
        if points:
            xs = [s for s, _ in points]
            ys = [v[0] for _, v in points]
            errors = [[v[0] - v[1][0] for _, v in points], [v[1][1] - v[0] for _, v in points]]
            eval_ax.errorbar(xs, ys, yerr=errors, fmt="o-", capsize=3, label=label)
    eval_ax.set(title="held-out documents (eval split, greedy)", xlabel="step", ylim=(0, 1.02))
    eval_ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python -m grumem.trainer.curve LOG.jsonl CURVE.png")
    with open(sys.argv[1], encoding="utf-8") as f:
        plot_curve([json.loads(line) for line in f if line.strip()], sys.argv[2])
