"""Shared fixtures: seeds, markers, tiny random Llama/Qwen2 checkpoints, the real SmolLM2 and its tokenizer."""
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # read when a kernel is defined: before grumem imports one
from transformers import LlamaConfig, Qwen2Config

from helpers import TINY, save_hf_checkpoint
from grumem.engine.models.registry import DEFAULT_MODEL


def pytest_addoption(parser):
    parser.addoption("--tokenizer", metavar="DIR", help="a tokenizer folder for the tiny models instead of the "
                     "embedded SmolLM2's (machines without its package: scripts/gpu_check.sh)")


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs CUDA")
    config.addinivalue_line("markers", "slow: takes more than a few seconds")


def pytest_collection_modifyitems(config, items):
    if not torch.cuda.is_available():
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(pytest.mark.skip(reason="needs CUDA"))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tiny_llama_path(tmp_path_factory, tokenizer) -> str:
    config = LlamaConfig(**TINY, rope_theta=1e4, tie_word_embeddings=False, architectures=["LlamaForCausalLM"])
    return save_hf_checkpoint(config, tmp_path_factory.mktemp("tiny-llama"), tokenizer)


@pytest.fixture(scope="session")
def tiny_qwen2_path(tmp_path_factory, tokenizer) -> str:
    config = Qwen2Config(**TINY, rope_theta=1e6, tie_word_embeddings=True, architectures=["Qwen2ForCausalLM"])
    return save_hf_checkpoint(config, tmp_path_factory.mktemp("tiny-qwen2"), tokenizer)


@pytest.fixture(scope="session")
def smollm2_path() -> str:
    from grumem.engine.models.registry import DEFAULT_MODEL, checkpoint_path

    return checkpoint_path(DEFAULT_MODEL)


@pytest.fixture(scope="session")
def smollm2_llm():
    from grumem.engine import LLM

    return LLM(kv_cache_memory_gb=1.0)


@pytest.fixture(scope="session")
def tokenizer(pytestconfig):
    from grumem.engine.models.registry import load_tokenizer

    return load_tokenizer(pytestconfig.getoption("tokenizer") or DEFAULT_MODEL)
