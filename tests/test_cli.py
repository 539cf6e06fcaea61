"""The command line on the real model: run prints a table, ask answers files and reports bad ones alone."""
import json
import re

import pytest
import torch

from grumem.cli import main
from grumem.gates import trained_settings

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
    lines = [{"document": str(good), "question": "What is the vault code?", "answers": "4711"},
             {"document": str(bad), "question": "Anything?"},
             {"document": str(tmp_path / "missing.txt"), "question": "Where?"},
             {"context": "", "question": "Empty?"},
             {"context": " \n\t ", "question": "Blank?"},
             [1, 2, 3],
             {"context": 12345, "question": "A number?"},
             {"context": "text", "question": "Both?", "document": str(good)},
             {"context": "text", "question": "Answers?", "answers": [1029384]}]
    batch.write_text("\n".join(json.dumps(line) for line in lines) + "\nnot json\n")
    main(["ask", "--batch", str(batch), "--json", *SMALL])
    records = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [r["line"] for r in records] == list(range(1, 11))
    assert records[0]["error"] is None and records[0]["answer"] and records[0]["answers"] == ["4711"]
    errors = [r["error"] for r in records[1:]]
    expected = ["not UTF-8", "cannot read", "empty document", "empty document", "a JSON object is needed, got list",
                '"context" must be a string, got int', "exactly one of", '"answers" must be a list of strings',
                "not JSON"]
    for error, fragment, number in zip(errors, expected, range(2, 11)):
        assert error.startswith(f"line {number}: ") and fragment in error, error


@pytest.fixture
def no_model(monkeypatch):
    """Fails any attempt to build an engine: argument errors must stop before the model loads."""
    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr("grumem.cli.common.LLM", refuse)


@pytest.mark.parametrize("argv, message", [
    (["run", "--tasks", "no_such_task"], "unknown task 'no_such_task'"),
    (["run", "--length", "0"], "--length needs positive integers"),
    (["run", "--chunk-tokens", "0"], "chunk_tokens must be >= 1"),
    (["run", "--model", "no/such/folder"], "neither a known model"),
    (["run", "--device", "cuda"] if not torch.cuda.is_available() else ["run", "--kv-cache-gb", "0"], "cuda|kv-cache-gb"),
    (["eval", "--lengths", "4096,x"], "--lengths needs positive integers"),
    (["ask", "--doc", "missing.txt", "--question", "q?"], "missing.txt: cannot read"),
    (["ask", "--doc", "README.md"], "--doc needs --question"),
    (["ask", "--doc", "README.md", "--question", "  "], '"question" must be a non-empty string'),
    (["ask", "--batch", "missing.jsonl"], "missing.jsonl: cannot read"),
    (["ask", "--batch", "README.md", "--question", "q?"], "go with --doc"),
    (["train", "--task", "nope"], "unknown task 'nope'"),
    (["train", "--group-size", "0"], "group_size must be >= 1"),
    (["train", "--steps", "-1"], "--steps, .* must be >= 0"),
    (["train", "--plot", "curve.png"], "--plot draws the held-out evaluations"),
    (["train", "--lora-rank", "0", "--adapter", "tests"], "needs --lora-rank > 0"),
    (["run", "--gates", "learned", "--model", "qwen2.5-3b"], "learned gates are trained for smollm2-135m only"),
    (["run", "--adapter", "no/such/adapter"], "--adapter 'no/such/adapter' is not a folder"),
    (["eval", "--compare-gates", "own,nope"], "'nope' is neither one of prior, own, learned nor a folder"),
])
def test_bad_arguments_stop_before_the_model_loads(argv, message, no_model, capsys):
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    assert stopped.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"grumem {argv[0]}: ")
    assert re.search(message, err[0]), err[0]


def cli_parser():
    import argparse

    from grumem.cli import SUBCOMMANDS

    parser = argparse.ArgumentParser()
    commands = parser.add_subparsers(dest="command")
    for command in SUBCOMMANDS:
        command.register(commands)
    return parser


def test_flag_defaults_come_from_the_configs():
    from dataclasses import replace

    from grumem.agent import AgentConfig
    from grumem.cli.common import agent_config
    from grumem.trainer import TrainerConfig
    from grumem.trainer.warm_start import WarmStartConfig

    parser = cli_parser()
    run, agent = agent_config(parser.parse_args(["run"])), AgentConfig()
    for name in ("chunk_tokens", "memory_tokens", "max_think_tokens", "answer_tokens", "gate_prior_threshold",
                 "think", "layout"):
        assert getattr(run, name) == getattr(agent, name), name
    train, trainer = parser.parse_args(["train"]), TrainerConfig()
    for name in ("lr", "alpha", "outcome", "kl_coef", "temperature", "mini_batches", "tis_cap", "autocast", "seed"):
        assert getattr(train, name) == getattr(trainer, name), name
    warm = WarmStartConfig()
    from grumem.cli.train import trainer_config, warm_start_config

    assert warm_start_config(train) == replace(warm, seed=train.seed)
    assert trainer_config(train).prompt_grad == trainer.prompt_grad


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
    main(["train", "--model", tiny_llama_path, "--task", "niah_single_1", "--lora-rank", "0", "--length", "512",
          "--chunk-tokens", "128", "--memory-tokens", "8",
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


def test_train_warm_starts_a_lora_adapter_logs_plots_and_saves_it(tmp_path, capsys, tiny_llama_path):
    saved, log, plot = tmp_path / "adapter", tmp_path / "log.jsonl", tmp_path / "curve.png"
    tiny = ["--model", tiny_llama_path, "--length", "768", "--chunk-tokens", "256", "--memory-tokens", "64",
            "--think-tokens", "24", "--answer-tokens", "8", "--kv-cache-gb", "0.05"]
    main(["train", *tiny, "--think", "quote", "--warm-start-steps", "2", "--documents-per-step", "1", "--steps", "1", "--group-size", "2",
          "--groups-per-step", "1", "--lora-rank", "4", "--eval-every", "2", "--eval-samples", "1",
          "--eval-tasks", "niah_single_1", "--log", str(log), "--plot", str(plot), "--save", str(saved), "--json"])
    printed = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    logged = [json.loads(line) for line in log.read_text().splitlines()]
    assert printed == logged
    assert [(r["stage"], r.get("eval_after_step", "step")) for r in logged] == [
        ("warm_start", 0), ("warm_start", "step"), ("warm_start", "step"), ("warm_start", 2), ("rl", "step"),
        ("rl", 1)]
    assert all(len(r["update_balanced_acc"]) == 2 for r in logged if "eval_after_step" in r)  # value, interval
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in saved.iterdir()) == ["README.md", "adapter_config.json", "adapter_model.safetensors",
                                                       "grumem_loop.json"]
    assert trained_settings(str(saved)) == {"think": "quote", "chunk_tokens": 256}  # run's defaults with it
    main(["run", *tiny, "--tasks", "niah_single_1", "--num-samples", "1", "--gates", "own", "--adapter", str(saved)])
    assert "niah_single_1" in capsys.readouterr().out


def test_learned_gates_are_refused_until_installed_then_run(tmp_path, monkeypatch, capsys, smollm2_path):
    from safetensors.torch import load_file

    from grumem.gates.__main__ import install
    from grumem.trainer import Policy
    from grumem.trainer.policy import LoraSettings

    gates = tmp_path / "gates"
    monkeypatch.setattr("grumem.gates.learned_gates_dir", lambda model="smollm2-135m": gates)
    monkeypatch.setattr("grumem.gates.SHIPPED", tmp_path / "none shipped")
    argv = ["run", "--gates", "learned", "--tasks", "niah_single_2", "--length", "2048", "--num-samples", "1", *SMALL]
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    assert stopped.value.code == 2 and "python -m grumem.gates DIR" in capsys.readouterr().err
    Policy(smollm2_path, lora=LoraSettings(rank=2, alpha=4.0)).save(str(tmp_path / "trained"))
    install(tmp_path / "trained", gates)
    assert {t.dtype for t in load_file(gates / "adapter_model.safetensors").values()} == {torch.bfloat16}
    assert json.loads((gates / "adapter_config.json").read_text())["base_model_name_or_path"] == "smollm2-135m"
    main(argv)
    header, _, row = capsys.readouterr().out.strip().splitlines()[-3:]
    assert "cached_per_turn" in header and row.split()[:2] == ["niah_single_2", "2048"]


def test_the_shipped_learned_gates_run_with_the_settings_they_were_trained_under(tmp_path, monkeypatch, capsys,
                                                                                 smollm2_path):
    from grumem.cli.common import agent_config, engine_options
    from grumem.gates import SHIPPED

    monkeypatch.setattr("grumem.gates.learned_gates_dir", lambda model="smollm2-135m": tmp_path / "none installed")
    args = cli_parser().parse_args(["run", "--gates", "learned"])
    config = agent_config(args)
    assert (config.think, config.chunk_tokens, config.layout, config.uses_gate_prior) == ("quote", 512, "paper", False)
    assert engine_options(args)["adapter"] == str(SHIPPED)
    given = ["run", "--gates", "learned", "--think", "free", "--chunk-tokens", "256"]
    flags = agent_config(cli_parser().parse_args(given))
    assert (flags.think, flags.chunk_tokens) == ("free", 256)  # flags given win over the adapter's settings
    main(["run", "--gates", "learned", "--tasks", "niah_single_1", "--length", "1024", "--num-samples", "1",
          "--kv-cache-gb", "0.5", "--json"])
    [row] = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["summary"]
    assert row["task"] == "niah_single_1" and row["format_ok"] == 1.0
