"""Shared pieces of the benchmarks: the real SmolLM2 in grumem and in transformers, and random prompts.

Run: .venv/bin/python -m pytest benchmarks/ --benchmark-columns=mean,rounds --benchmark-json=bench.json
"""
import pytest
import torch
from transformers import AutoModelForCausalLM

import peer_table
from grumem.engine import LLM
from grumem.engine.models.registry import DEFAULT_MODEL, checkpoint_path


# bench_engine's systems: fp32 (exact against HF), fp32 over a bf16 KV cache, and all bf16 (on each side)
GRUMEM_OPTIONS = {"grumem": {}, "grumem-bf16kv": {"kv_cache_dtype": "bfloat16"}, "grumem-bf16": {"dtype": "bfloat16"}}
HF_DTYPES = {"hf": torch.float32, "hf-bf16": torch.bfloat16}  # hf-generate runs the "hf" model


@pytest.fixture(scope="session")
def engines():
    """Engines and HF models by system name, built on first use."""
    built = {}

    def get(system: str):
        system = "hf" if system == "hf-generate" else system
        if system not in built:
            if system in GRUMEM_OPTIONS:
                built[system] = LLM(max_num_batched_tokens=4096, max_num_seqs=64, kv_cache_memory_gb=2.0,
                                    **GRUMEM_OPTIONS[system])
            else:
                path = checkpoint_path(DEFAULT_MODEL)
                built[system] = AutoModelForCausalLM.from_pretrained(path, dtype=HF_DTYPES[system]).eval()
        return built[system]

    return get


@pytest.fixture(scope="session")
def grumem_llm(engines) -> LLM:
    return engines("grumem")


@pytest.fixture(scope="session")
def hf_model(engines):
    return engines("hf")


def pytest_addoption(parser):
    group = parser.getgroup("grumem benchmarks")
    group.addoption("--questions", type=int, default=16, help="bench_agent: questions per system")
    group.addoption("--length", type=int, default=8192, help="bench_agent: context tokens per question")
    group.addoption("--task", default="niah_single_1", help="bench_agent: task name")
    group.addoption("--group-size", type=int, default=8, help="bench_trainer: rollouts per question")
    group.addoption("--hostile-lines", type=int, default=1000, help="bench_hostile: lines in the batch")
    group.addoption("--huge-words", type=int, default=20_000, help="bench_hostile: words of each huge document")
    group.addoption("--peer-loops", default="memagent,gated", help="bench_peers: loops, comma-separated")
    group.addoption("--peer-dtypes", default="float32,bfloat16", help="bench_peers: dtypes")
    group.addoption("--peer-lengths", default="8192,32768", help="bench_peers: context tokens per document")
    group.addoption("--peer-documents", default="4,16,64", help="bench_peers: documents in flight")
    group.addoption("--peer-rounds", type=int, default=3, help="bench_peers: rounds per cell, systems alternating")
    group.addoption("--serve-documents", type=int, default=64, help="bench_serve: document-QA requests")
    group.addoption("--serve-lengths", default="4096,8192", help="bench_serve: their lengths (split evenly)")
    group.addoption("--serve-clients", type=int, default=16, help="bench_serve: concurrent clients")
    group.addoption("--serve-load-requests", type=int, default=200, help="bench_serve: requests of the load run")
    group.addoption("--serve-load-length", type=int, default=2048, help="bench_serve: their document length")
    group.addoption("--huge-lengths", default="65536,262144,1048576", help="bench_huge_document: tokens per file")
    group.addoption("--huge-megabytes", type=int, default=200, help="bench_huge_document: the big file, exit gate on")
    group.addoption("--replica-questions", type=int, default=16, help="bench_replicas: questions per pool")
    group.addoption("--replica-length", type=int, default=4096, help="bench_replicas: their context tokens")


_AGENT_RESULTS: dict[str, tuple[float, float, int]] = {}


@pytest.fixture(scope="session")
def agent_results() -> dict:
    return _AGENT_RESULTS


def pytest_terminal_summary(terminalreporter):
    peers = peer_table.summary_lines()
    if peers:
        terminalreporter.section("memory loops, grumem vs vLLM side by side")
        for line in peers:
            terminalreporter.write_line(line)
    if not _AGENT_RESULTS:
        return
    base = _AGENT_RESULTS.get("memagent-hf-plain", (None,))[0]
    terminalreporter.section("memory loop, side by side")
    for system, (seconds, accuracy, n) in _AGENT_RESULTS.items():
        speedup = f"{base / seconds:5.2f}x" if base else "  -  "
        terminalreporter.write_line(f"{system:26s} {seconds:8.1f} s  {seconds / n:7.1f} s/question  "
                                    f"speed-up {speedup}  accuracy {accuracy:.2f} ({n} questions)")


def random_prompts(num: int, length: int, seed: int = 0, prefix: list[int] | None = None) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [(prefix or []) + torch.randint(100, 40000, (length,), generator=g).tolist() for _ in range(num)]
