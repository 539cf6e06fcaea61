"""Scores and gate statistics of finished trajectories, and the tables `grumem run` and `grumem eval` print."""
import math
from statistics import mean

from grumem.agent import Trajectory
from grumem.tasks import EXIT_TIMINGS

Z95 = 1.959964


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def wilson(successes: float, n: int) -> tuple[float, float] | None:
    """The 95% Wilson score interval of a proportion; None for n = 0."""
    if n == 0:
        return None
    p, z2 = successes / n, Z95 * Z95
    centre, spread = (p + z2 / (2 * n)) / (1 + z2 / n), Z95 * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, centre - spread), min(1.0, centre + spread)


def summarize(trajectories: list[Trajectory], wall_seconds: float) -> dict:
    """Accuracy, speed and gate behaviour of one run (one task, one length, one mode)."""
    scored = [t for t in trajectories if t.score is not None]
    memory_turns = [turn for t in trajectories for turn in t.memory_turns]
    labelled = [turn for turn in memory_turns if turn.has_evidence is not None and turn.check is not None]
    said_yes = [turn for turn in labelled if turn.check == "yes"]
    with_evidence = [turn for turn in labelled if turn.has_evidence]
    exits = [t.exit_timing for t in trajectories if t.exit_timing is not None]
    return {
        "questions": len(trajectories),
        "errors": sum(t.error is not None for t in trajectories),
        "accuracy": mean(t.score for t in scored) if scored else None,
        "seconds_per_question": wall_seconds / max(len(trajectories), 1),
        "wall_seconds": wall_seconds,
        "turns": mean(len(t.turns) for t in trajectories) if trajectories else 0.0,
        "chunks_read": mean(t.stop_chunk + 1 for t in trajectories) if trajectories else 0.0,
        "memory_tokens": mean(turn.memory_tokens for turn in memory_turns) if memory_turns else 0.0,
        # per memory turn: its prompt, and the part of it the prefix cache served (the layout decides how much)
        "prompt_per_turn": mean(len(turn.prompt_ids) for turn in memory_turns) if memory_turns else None,
        "cached_per_turn": mean(turn.num_cached_tokens for turn in memory_turns) if memory_turns else None,
        "format_ok": _ratio(sum(turn.well_formed for turn in memory_turns), len(memory_turns)),
        "update_precision": _ratio(sum(turn.has_evidence for turn in said_yes), len(said_yes)),
        "update_recall": _ratio(sum(turn.check == "yes" for turn in with_evidence), len(with_evidence)),
        **{f"exit_{timing}": _ratio(exits.count(timing), len(exits)) for timing in EXIT_TIMINGS},
    }


def gate_report(trajectories: list[Trajectory]) -> dict:
    """The gates against the labels, each as (value, (low, high)) with its 95% Wilson interval, or None: update
    balanced accuracy (the mean of the yes rate on evidence chunks and the no rate on the others), the yes rate on
    distractor chunks, exit timing, answer accuracy (the mean score; a two-needle answer with one value scores 0.5);
    chunks read is a plain mean."""
    turns = [turn for t in trajectories for turn in t.memory_turns if turn.has_evidence is not None]
    evidence = [turn.check == "yes" for turn in turns if turn.has_evidence]
    others = [turn.check != "yes" for turn in turns if not turn.has_evidence]
    distractors = [turn.check == "yes" for turn in turns if turn.has_distractor]
    exits = [t.exit_timing for t in trajectories if t.exit_timing is not None]
    scores = [t.score for t in trajectories if t.score is not None]
    report = {"update_balanced_acc": _balanced(evidence, others), "false_yes_distractor": _proportion(distractors)}
    for timing in EXIT_TIMINGS:
        report[f"exit_{timing}"] = _proportion([e == timing for e in exits])
    report["chunks_read"] = mean(t.stop_chunk + 1 for t in trajectories) if trajectories else None
    report["accuracy"] = _proportion(scores)
    return report


def _proportion(values: list) -> tuple[float, tuple[float, float]] | None:
    return (sum(values) / len(values), wilson(sum(values), len(values))) if values else None


def _balanced(positives: list[bool], negatives: list[bool]):
    """The mean of two rates, its interval the mean of theirs (conservative); one rate alone when the other is
    unmeasured."""
    parts = [p for p in (_proportion(positives), _proportion(negatives)) if p is not None]
    if not parts:
        return None
    return (mean(p[0] for p in parts), (mean(p[1][0] for p in parts), mean(p[1][1] for p in parts)))


def format_cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, tuple):
        estimate, (low, high) = value
        return f"{estimate:.2f} [{low:.2f},{high:.2f}]"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def format_table(rows: list[dict], columns: list[str]) -> str:
    cells = [columns] + [[format_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    lines = ["  ".join(cell.rjust(w) for cell, w in zip(r, widths)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
