"""Huge documents through `grumem ask --doc` (a process each): time and peak RSS over the model's, for files of 64K,
256K and 1M tokens read with the exit gate (a needle in the third chunk: reading stops there) and without it (every
chunk is read), and a 200 MB file with the exit gate. The file is tokenised chunk by chunk as it is read
(grumem/tasks/text_file.py), so the growth must stay under 200 MB whatever the size (issue 16).

  .venv/bin/python -m pytest benchmarks/bench_huge_document.py -s
  (--huge-lengths 65536,262144,1048576 --huge-megabytes 200; without the exit gate 1M tokens is about 1,000 memory
  turns: an hour on a 2-core CPU)

The growth is peak RSS minus that of the same command on a 7-chunk document read to its end (model, Python, and a
KV cache of 0.25 GB that its turns fill).
"""
import json
import os
import subprocess
import sys
import time

import pytest

from grumem.engine.models.registry import DEFAULT_MODEL, load_tokenizer
from grumem.tasks.haystack import essay_sentences
from grumem.tasks.niah import NEEDLE

QUESTION = "What is the special magic number for amber-lantern mentioned in the provided text?"
NEEDLE_TEXT = " " + NEEDLE.format(type="numbers", key="amber-lantern", value="7351926") + " "
NEEDLE_AT_BYTES = 9_000  # about 2K tokens in: the third chunk of 1024
# small, so that the baseline's turns page all of it in (the OS maps a CPU KV cache page by page as it is first
# written): the growth is then over the model and the whole cache
KV_CACHE_GB = 0.25
RESULTS: dict[str, dict] = {}


def write_document(path: str, num_bytes: int) -> None:
    """Essay text to num_bytes, the needle after NEEDLE_AT_BYTES, written a megabyte at a time."""
    essays = "".join(essay_sentences()).encode()
    with open(path, "wb") as f:
        written = 0
        while written < num_bytes:
            piece = essays[: min(len(essays), num_bytes - written)]
            if written <= NEEDLE_AT_BYTES < written + len(piece):
                cut = piece.index(b" ", NEEDLE_AT_BYTES - written)
                piece = piece[:cut] + NEEDLE_TEXT.encode() + piece[cut:]
            f.write(piece)
            written += len(piece)


def ask(path: str, exit_gate: bool) -> dict:
    """One `grumem ask` process: its wall time, peak RSS and outcome."""
    argv = [sys.executable, "-c", "import sys; from grumem.cli import main; main(sys.argv[1:])", "ask", "--doc", path,
            "--question", QUESTION, "--answers", "7351926", "--kv-cache-gb", str(KV_CACHE_GB), "--json",
            *([] if exit_gate else ["--no-exit-gate"])]
    start = time.perf_counter()
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    assert status == 0, output
    record = json.loads(output.splitlines()[-1])
    return {"seconds": time.perf_counter() - start, "peak_rss_mb": usage.ru_maxrss / 1024, "chunks_read":
            record["stop_chunk"] + 1, "correct": record.get("correct"), "error": record["error"]}


@pytest.fixture(scope="module")
def bytes_per_token():
    text = "".join(essay_sentences()[:2000])
    return len(text.encode()) / len(load_tokenizer(DEFAULT_MODEL).encode(text, add_special_tokens=False))


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("small") / "small.txt")
    write_document(path, 30_000)  # 7 chunks: their prompts fill the KV cache (prefix caching keeps them)
    return ask(path, exit_gate=False)["peak_rss_mb"]


def cases(config) -> list[tuple[str, int, bool]]:
    lengths = [int(x) for x in config.getoption("huge_lengths").split(",")]
    by_length = [(f"{n // 1024}K", n, exit_gate) for n in lengths for exit_gate in (True, False)]
    return by_length + [(f"{config.getoption('huge_megabytes')}MB", -config.getoption("huge_megabytes"), True)]


def pytest_generate_tests(metafunc):
    if "case" in metafunc.fixturenames:
        metafunc.parametrize("case", cases(metafunc.config), ids=lambda c: f"{c[0]}-{'EG' if c[2] else 'noEG'}")


def test_huge_document(benchmark, tmp_path, bytes_per_token, baseline, case):
    name, size, exit_gate = case
    num_bytes = -size * 2**20 if size < 0 else int(size * bytes_per_token)
    path = str(tmp_path / "huge.txt")
    write_document(path, num_bytes)
    result = benchmark.pedantic(lambda: ask(path, exit_gate), rounds=1, warmup_rounds=0)
    result.update(file_mb=num_bytes / 2**20, rss_growth_mb=result["peak_rss_mb"] - baseline)
    RESULTS[f"{name} {'w EG' if exit_gate else 'w/o EG'}"] = result
    benchmark.extra_info.update(result)
    assert result["error"] is None


@pytest.fixture(scope="module", autouse=True)
def print_summary():
    yield
    if RESULTS:
        print("\n\ngrumem ask --doc on huge files (peak RSS growth over a 7-chunk document; target < 200 MB)")
        for name, r in RESULTS.items():
            print(f"{name:22s} {r['file_mb']:8.1f} MB  {r['seconds']:8.1f} s  chunks read {r['chunks_read']:5d}  "
                  f"peak RSS {r['peak_rss_mb']:7.0f} MB  growth {r['rss_growth_mb']:6.0f} MB  correct {r['correct']}")
