"""The command line on the real model: run prints a table, ask answers files and reports bad ones alone."""
import json

import pytest
import torch

from grumem.cli import main

SMALL = ["--chunk-tokens", "256", "--memory-tokens", "16", "--think-tokens", "4", "--answer-tokens", "12",
         "--kv-cache-gb", "0.5"]


def test_run_prints_a_result_table(capsys, smollm2_path):
    main(["run", "--tasks", "niah_single_2", "--length", "2048", "--num-samples", "1", *SMALL])
    out = capsys.readouterr().out
    header, rule, row = out.strip().splitlines()[-3:]
    assert "accuracy" in header and "update_recall" in header
    assert row.split()[:2] == ["niah_single_2", "2048"]


def test_ask_batch_answers_good_lines_and_reports_bad_ones(tmp_path, capsys, smollm2_path):
    good = tmp_path / "good.txt"
    good.write_text("The vault code is 4711. " * 20)
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"\xff\xfe\x00 not text")
    batch = tmp_path / "batch.jsonl"
    lines = [{"document": str(good), "question": "What is the vault code?", "answers": ["4711"]},
             {"document": str(bad), "question": "Anything?"},
             {"document": str(tmp_path / "missing.txt"), "question": "Where?"},
             {"context": "", "question": "Empty?"}]
    batch.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    main(["ask", "--batch", str(batch), "--json", *SMALL])
    records = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert len(records) == 4
    assert records[0]["error"] is None and records[0]["answer"] and "correct" in records[0]
    assert "not UTF-8" in records[1]["error"]
    assert "cannot read" in records[2]["error"]
    assert "empty document" in records[3]["error"]


def test_unknown_task_is_a_clear_error():
    with pytest.raises(SystemExit, match="unknown task|niah_single_1"):
        main(["run", "--tasks", "no_such_task", "--num-samples", "1", "--kv-cache-gb", "0.1"])


def test_eval_compares_the_three_modes(capsys, smollm2_path):
    main(["eval", "--tasks", "niah_single_2", "--lengths", "2048", "--num-samples", "1", *SMALL, "--json"])
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert row["task"] == "niah_single_2" and row["length"] == 2048
    for name in ("memagent", "grumem w/o EG", "grumem w EG"):
        assert 0.0 <= row[f"{name} acc"] <= 1.0 and row[f"{name} s"] > 0
    assert row["speedup w EG"] == pytest.approx(row["memagent s"] / row["grumem w EG s"])


def test_train_prints_a_line_per_step_and_saves_a_loadable_checkpoint(tmp_path, capsys, tiny_llama_path):
    from safetensors.torch import load_file

    from grumem.engine import LLM

    saved = tmp_path / "trained"
    main(["train", "--model", tiny_llama_path, "--length", "512", "--chunk-tokens", "128", "--memory-tokens", "8",
          "--think-tokens", "4", "--answer-tokens", "4", "--group-size", "3", "--groups-per-step", "2",
          "--steps", "2", "--mini-batches", "2", "--autocast", "bfloat16", "--tis-cap", "2", "--lr", "1e-3", "--kv-cache-gb", "0.05",
          "--eval-every", "2", "--eval-samples", "1", "--json", "--save", str(saved)])
    records = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [r.get("eval_after_step", "step") for r in records] == [0, "step", "step", 2]
    assert all(r["accuracy"] is not None for r in records[::3])
    steps = records[1:3]
    assert [s["step"] for s in steps] == [1, 2]
    assert all(s["trajectories"] > 0 and "update_acc" in s for s in steps)
    before = load_file(f"{tiny_llama_path}/model.safetensors")
    after = load_file(f"{saved}/model.safetensors")
    assert any(not torch.equal(after[name], before[name]) for name in before)
    assert LLM(str(saved), num_kvcache_blocks=64).generate([[1, 2, 3]])[0].outputs[0].token_ids
