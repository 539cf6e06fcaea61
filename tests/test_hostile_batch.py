"""A hostile batch (grumem/tasks/hostile.py) through `grumem ask --batch --out`, constrained and unconstrained, on a
tiny model: every line gets exactly one record with the outcome its kind calls for, and no KV block stays in use."""
import json

import pytest

from grumem.cli import main
from grumem.tasks.hostile import KINDS, write_hostile_batch

ANSWERED = {"good", "huge", "control_chars", "rtl_emoji", "duplicate"}
ERRORS = {"empty": "empty document", "whitespace": "empty document", "binary_file": "not UTF-8",
          "missing_file": "cannot read", "long_question": "longer than the chunk budget", "not_json": "not JSON",
          "not_object": "a JSON object is needed", "wrong_types": '"context" must be a string',
          "both_sources": "exactly one of"}


@pytest.mark.parametrize("constraint", ["format", "none"])
def test_every_line_of_a_hostile_batch_gets_one_record(tiny_llama_path, tmp_path, monkeypatch, constraint):
    from grumem.engine import LLM

    engines = []
    monkeypatch.setattr("grumem.cli.common.LLM", lambda *a, **kw: engines.append(LLM(*a, **kw)) or engines[-1])
    assert set(KINDS) == ANSWERED | set(ERRORS)
    batch = write_hostile_batch(str(tmp_path / "docs"), num_lines=2 * len(KINDS), huge_words=2500)
    out = tmp_path / "results.jsonl"
    main(["ask", "--model", tiny_llama_path, "--batch", batch, "--out", str(out), "--json", "--constraint",
          constraint, "--chunk-tokens", "128", "--memory-tokens", "6", "--think-tokens", "3", "--answer-tokens", "3",
          "--gates", "own", "--dtype", "float32", "--kv-cache-gb", "0.05"])
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["line"] for r in records) == list(range(1, 2 * len(KINDS) + 1))
    for record in records:
        kind = KINDS[(record["line"] - 1) % len(KINDS)]
        if kind in ANSWERED:
            assert record["status"] == "answered", record
        else:
            assert record["status"] == "error" and ERRORS[kind] in record["error"], (kind, record["error"])
    (llm,) = engines
    assert llm.block_manager.num_free_blocks == llm.model_runner.num_blocks and not llm.has_unfinished_requests()
