"""Named models: the embedded default (SmolLM2-135M, real weights) and random-weight models of real shapes.

`load_model(name_or_path)` also accepts any local Hugging Face checkpoint folder (config.json + *.safetensors).
"""
import os

import torch
from transformers import AutoTokenizer, PretrainedConfig, PreTrainedTokenizerBase, Qwen2Config

from grumem.engine.loader import build_model, init_random_weights, load_config, load_weights
from grumem.engine.models import smollm2
from grumem.engine.models.llama import LlamaForCausalLM

DEFAULT_MODEL = "smollm2-135m"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

# Qwen2.5 shapes from their published configs; random weights, for speed work on real sizes
_QWEN25_SHAPES = {
    "qwen2.5-0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                         num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
    "qwen2.5-3b": dict(hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16,
                       num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
    "qwen2.5-7b": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                       num_key_value_heads=4, vocab_size=152064, tie_word_embeddings=False),
}
MODEL_NAMES = (DEFAULT_MODEL, *_QWEN25_SHAPES)


def cache_dir() -> str:
    """Where built checkpoints live: $GRUMEM_CACHE, else $XDG_CACHE_HOME/grumem, else ~/.cache/grumem."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.environ.get("GRUMEM_CACHE") or os.path.join(base, "grumem")


def random_config(name: str) -> PretrainedConfig:
    return Qwen2Config(
        **_QWEN25_SHAPES[name], max_position_embeddings=32768, rope_theta=1e6, rms_norm_eps=1e-6,
        architectures=["Qwen2ForCausalLM"], eos_token_id=2,
    )


def checkpoint_path(name_or_path: str) -> str | None:
    """The checkpoint folder behind a name or path; None for random-weight models."""
    if name_or_path == DEFAULT_MODEL:
        return smollm2.ensure_checkpoint(os.path.join(cache_dir(), DEFAULT_MODEL))
    if name_or_path in _QWEN25_SHAPES:
        return None
    if os.path.isdir(name_or_path):
        return name_or_path
    raise ValueError(f"unknown model {name_or_path!r}: use one of {', '.join(MODEL_NAMES)} or a checkpoint folder")


def parse_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"unsupported dtype {dtype!r}; use one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


def load_model(
    name_or_path: str = DEFAULT_MODEL, dtype: str | torch.dtype = "float32", device: str = "cpu", seed: int = 0,
    adapter: str | None = None,
) -> LlamaForCausalLM:
    dtype = parse_dtype(dtype)
    path = checkpoint_path(name_or_path)
    if path is None:
        if adapter is not None:
            raise ValueError(f"{name_or_path!r} has random weights: a LoRA adapter needs the checkpoint it was "
                             "trained on")
        model = build_model(random_config(name_or_path), dtype, device)
        init_random_weights(model, seed)
        return model
    model = build_model(load_config(path), dtype, device)
    load_weights(model, path, adapter)
    return model


def load_tokenizer(name_or_path: str = DEFAULT_MODEL) -> PreTrainedTokenizerBase:
    """The model's tokenizer; random-weight models use SmolLM2's (its ids fit in their larger vocabularies)."""
    path = checkpoint_path(DEFAULT_MODEL if name_or_path in _QWEN25_SHAPES else name_or_path)
    try:
        return AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot load a tokenizer from {path!r}: {e}") from e
