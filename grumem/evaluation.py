"""Scores and gate statistics of finished trajectories, and the tables `grumem run` and `grumem eval` print."""
from statistics import mean

from grumem.agent import Trajectory
from grumem.tasks import EXIT_TIMINGS


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


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
        "format_ok": _ratio(sum(turn.well_formed for turn in memory_turns), len(memory_turns)),
        "update_precision": _ratio(sum(turn.has_evidence for turn in said_yes), len(said_yes)),
        "update_recall": _ratio(sum(turn.check == "yes" for turn in with_evidence), len(with_evidence)),
        **{f"exit_{timing}": _ratio(exits.count(timing), len(exits)) for timing in EXIT_TIMINGS},
    }


def format_cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def format_table(rows: list[dict], columns: list[str]) -> str:
    cells = [columns] + [[format_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    lines = ["  ".join(cell.rjust(w) for cell, w in zip(r, widths)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
