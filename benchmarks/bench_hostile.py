"""A hostile 1,000-line batch (grumem/tasks/hostile.py) through `grumem ask --batch --out` on SmolLM2, with the
turn-format constraint and without it (the untrained model then never closes its tags): outcomes by kind, wall time,
peak RSS, and the KV blocks still in use afterwards (must be 0).
  .venv/bin/python -m pytest benchmarks/bench_hostile.py --hostile-lines 1000 --huge-words 20000
"""
import collections
import json
import resource

import pytest

from grumem.cli import main
from grumem.tasks.hostile import KINDS, write_hostile_batch


@pytest.mark.parametrize("constraint", ["format", "none"])
def test_hostile_batch(benchmark, tmp_path, monkeypatch, request, constraint):
    from grumem.engine import LLM

    engines = []
    monkeypatch.setattr("grumem.cli.common.LLM", lambda *a, **kw: engines.append(LLM(*a, **kw)) or engines[-1])
    num_lines = request.config.getoption("hostile_lines")
    batch = write_hostile_batch(str(tmp_path / "docs"), num_lines, huge_words=request.config.getoption("huge_words"))
    out = tmp_path / "results.jsonl"
    argv = ["ask", "--batch", batch, "--out", str(out), "--json", "--constraint", constraint]
    benchmark.pedantic(lambda: main(argv), rounds=1, warmup_rounds=0)
    records = [json.loads(line) for line in out.read_text().splitlines()]
    by_kind = collections.defaultdict(collections.Counter)
    for record in records:
        by_kind[KINDS[(record["line"] - 1) % len(KINDS)]][record["status"]] += 1
    (llm,) = engines
    blocks_in_use = llm.model_runner.num_blocks - llm.block_manager.num_free_blocks
    benchmark.extra_info.update(
        lines=num_lines, records=len(records), distinct_lines=len({r["line"] for r in records}),
        outcomes={kind: dict(counts) for kind, counts in by_kind.items()}, blocks_in_use_after=blocks_in_use,
        peak_rss_gb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    )
    assert len(records) == len({r["line"] for r in records}) == num_lines and blocks_in_use == 0
