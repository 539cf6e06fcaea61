"""Shared pieces of the benchmarks: the real SmolLM2 in grumem and in transformers, and random prompts.

Run: .venv/bin/python -m pytest benchmarks/ --benchmark-columns=mean,rounds --benchmark-json=bench.json
"""
import pytest
import torch
from transformers import AutoModelForCausalLM

from grumem.engine import LLM
from grumem.engine.models.registry import DEFAULT_MODEL, checkpoint_path


@pytest.fixture(scope="session")
def grumem_llm() -> LLM:
    return LLM(max_num_batched_tokens=4096, max_num_seqs=64)


@pytest.fixture(scope="session")
def hf_model():
    return AutoModelForCausalLM.from_pretrained(checkpoint_path(DEFAULT_MODEL), dtype=torch.float32).eval()


def random_prompts(num: int, length: int, seed: int = 0, prefix: list[int] | None = None) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [(prefix or []) + torch.randint(100, 40000, (length,), generator=g).tolist() for _ in range(num)]
