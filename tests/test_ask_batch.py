"""grumem ask --batch --out: records written as documents finish, a SIGKILLed run resumed without losing or
repeating a line, Ctrl-C recording the documents in flight as aborted (a real run of the CLI on a tiny model)."""
import json
import random
import signal
import subprocess
import sys
import time

import pytest

NUM_LINES = 40
FLAGS = ["--chunk-tokens", "48", "--memory-tokens", "6", "--think-tokens", "3", "--answer-tokens", "3",
         "--gates", "own", "--dtype", "float32", "--kv-cache-gb", "0.05", "--json",
         "--max-num-seqs", "1"]  # one document at a time: records trickle in, so a kill always lands mid-run


@pytest.fixture
def batch(tmp_path):
    rng = random.Random(0)
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa".split()
    path = tmp_path / "batch.jsonl"
    lines = [json.dumps({"context": " ".join(rng.choice(words) for _ in range(25 * (1 + i))),  # 1 to 25 chunks
                         "question": f"Which word comes first in document {i}?", "answers": ["alpha"]})
             for i in range(NUM_LINES - 1)]
    lines.insert(7, "[1, 2, 3]")  # a bad line gets its own error record
    path.write_text("\n".join(lines) + "\n")
    return path


# a child of a background job inherits SIGINT ignored; a terminal's Ctrl-C reaches grumem with the default handler
CLI = "import signal; signal.signal(signal.SIGINT, signal.default_int_handler); from grumem.cli import main; main()"


def command(model: str, batch, out, *extra) -> list[str]:
    return [sys.executable, "-c", CLI, "ask", "--model", model, "--batch", str(batch), "--out", str(out), *FLAGS,
            *extra]


def records(out) -> list[dict]:
    return [json.loads(line) for line in out.read_text().split("\n")[:-1]]


def start_and_wait(cmd: list[str], out, min_records: int = 3) -> subprocess.Popen:
    """Starts a run and returns once `min_records` records are in the file, with the run still going."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 180
    while not (out.exists() and out.read_text().count("\n") >= min_records):
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline, "no records appeared"
        time.sleep(0.01)
    return proc


def test_a_killed_run_resumes_without_losing_or_repeating_a_line(tiny_llama_path, batch, tmp_path):
    out = tmp_path / "results.jsonl"
    proc = start_and_wait(command(tiny_llama_path, batch, out), out)
    proc.kill()
    proc.wait()
    before = records(out)
    assert 3 <= len(before) < NUM_LINES  # killed mid-run: some lines answered, some not
    resumed = subprocess.run(command(tiny_llama_path, batch, out, "--resume"), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    after = records(out)
    assert sorted(r["line"] for r in after) == list(range(1, NUM_LINES + 1))  # every line once
    assert after[:len(before)] == before  # nothing finished before the kill was redone or lost
    printed = [json.loads(line) for line in resumed.stdout.splitlines()]
    assert sorted(r["line"] for r in printed) == sorted(set(range(1, NUM_LINES + 1)) - {r["line"] for r in before})
    bad = next(r for r in after if r["line"] == 8)
    assert bad["status"] == "error" and "a JSON object is needed" in bad["error"]
    assert {r["status"] for r in after if r["line"] != 8} == {"answered"}


def test_ctrl_c_records_the_documents_in_flight_as_aborted_and_resume_reads_them(tiny_llama_path, batch, tmp_path):
    out = tmp_path / "results.jsonl"
    proc = start_and_wait(command(tiny_llama_path, batch, out), out)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130
    assert b"interrupted" in proc.stderr.read()
    first = records(out)
    assert sorted(r["line"] for r in first) == list(range(1, NUM_LINES + 1))  # every line has an outcome
    aborted = {r["line"] for r in first if r["status"] == "aborted"}
    assert aborted and all(r["error"].startswith("aborted: KeyboardInterrupt") for r in first
                           if r["line"] in aborted)
    subprocess.run(command(tiny_llama_path, batch, out, "--resume"), check=True, capture_output=True)
    final = records(out)
    assert sorted(r["line"] for r in final) == list(range(1, NUM_LINES + 1))
    assert not any(r["status"] == "aborted" for r in final)
    assert [r for r in final if r["line"] not in aborted] == [r for r in first if r["line"] not in aborted]


def test_results_are_never_overwritten_by_accident(batch, tmp_path, capsys):
    from grumem.cli import main

    out = tmp_path / "results.jsonl"
    out.write_text('{"line": 1, "hash": "x", "status": "answered"}\n')
    with pytest.raises(SystemExit) as stopped:
        main(["ask", "--batch", str(batch), "--out", str(out)])
    assert stopped.value.code == 2 and "--resume" in capsys.readouterr().err
    out.write_text("not a record\n")
    with pytest.raises(SystemExit):
        main(["ask", "--batch", str(batch), "--out", str(out), "--resume"])
    assert "is not a grumem ask record" in capsys.readouterr().err


def test_resume_keeps_only_the_records_of_lines_whose_text_is_unchanged(tmp_path):
    from grumem.cli.results_file import ResultsFile

    out = tmp_path / "results.jsonl"
    kept = {"line": 1, "hash": "aaaa", "status": "answered"}
    out.write_text("\n".join(json.dumps(r) for r in [
        kept, {"line": 2, "hash": "bbbb", "status": "aborted"}, {"line": 3, "hash": "old", "status": "error"},
    ]) + '\n{"line": 4, "hash": "cut sho')  # the last record was cut short by a kill
    results = ResultsFile(str(out), resume=True)
    results.open({(1, "aaaa"), (2, "bbbb"), (3, "new"), (4, "dddd")})  # line 3's text changed since
    assert results.done == {(1, "aaaa")}
    results.write({"line": 2, "hash": "bbbb", "status": "answered"})
    results.close()
    assert [json.loads(line) for line in out.read_text().splitlines()] == [
        kept, {"line": 2, "hash": "bbbb", "status": "answered"}]
