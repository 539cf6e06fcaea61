"""Builds our model for a Hugging Face config and loads safetensors checkpoints into it (packed qkv / gate_up)."""
import contextlib
import glob
import os

import torch
from safetensors import SafetensorError, safe_open
from torch import nn
from transformers import AutoConfig, PretrainedConfig

from grumem.engine.adapters import merge_adapter, read_adapter
from grumem.engine.layers.linear import default_weight_loader
from grumem.engine.models.llama import LlamaForCausalLM
from grumem.engine.models.qwen2 import Qwen2ForCausalLM

ARCHITECTURES: dict[str, type[LlamaForCausalLM]] = {
    "LlamaForCausalLM": LlamaForCausalLM,
    "Qwen2ForCausalLM": Qwen2ForCausalLM,
}
MODEL_TYPES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}


def load_config(path: str) -> PretrainedConfig:
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise FileNotFoundError(f"no config.json in {path!r}: not a Hugging Face checkpoint folder")
    try:
        return AutoConfig.from_pretrained(path)
    except (ValueError, OSError) as e:
        raise ValueError(f"cannot read the config in {path!r}: {e}") from e


def model_class(config: PretrainedConfig) -> type[LlamaForCausalLM]:
    names = config.architectures or [MODEL_TYPES.get(config.model_type, config.model_type)]
    for name in names:
        if name in ARCHITECTURES:
            if getattr(config, "use_sliding_window", False):
                raise ValueError("sliding-window attention is not supported (config.use_sliding_window is true)")
            return ARCHITECTURES[name]
    raise ValueError(f"unsupported architecture {names}; supported: {', '.join(ARCHITECTURES)}")


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype):
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def build_model(config: PretrainedConfig, dtype: torch.dtype, device: torch.device | str) -> LlamaForCausalLM:
    """An uninitialised model (weights are torch.empty) on `device`; buffers such as the RoPE table stay fp32."""
    cls = model_class(config)
    with torch.device(device), _default_dtype(dtype):
        return cls(config).eval()


def init_random_weights(model: nn.Module, seed: int, std: float = 0.02) -> None:
    """Deterministic random weights (normal(0, std), norms at 1, biases 0) for speed work and unit tests."""
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.fill_(1.0)
            elif name.endswith(".bias"):
                param.zero_()
            else:
                param.normal_(0.0, std, generator=generator)


def checkpoint_tensors(path: str):
    files = sorted(glob.glob(os.path.join(path, "*.safetensors")))
    if not files:
        raise FileNotFoundError(f"no *.safetensors weights in {path!r}")
    for file in files:
        try:
            with safe_open(file, framework="pt", device="cpu") as f:
                for name in f.keys():
                    yield name, f.get_tensor(name)
        except SafetensorError as e:
            raise ValueError(f"corrupt checkpoint file {file!r}: {e}") from e


def load_weights(model: LlamaForCausalLM, path: str, adapter: str | None = None) -> None:
    """Copies every checkpoint tensor into its (possibly packed) parameter, a LoRA adapter merged in; fails if any
    parameter is left unset."""
    tensors = checkpoint_tensors(path)
    if adapter is not None:
        tensors = merge_adapter(tensors, read_adapter(adapter))
    loaded = load_named_tensors(model, tensors)
    _check_complete(model, dict(model.named_parameters()), loaded)


def load_named_tensors(model: LlamaForCausalLM, named_tensors) -> set[str]:
    """Copies (checkpoint name, tensor) pairs into the model; returns the "param:shard" keys written."""
    params = dict(model.named_parameters())  # tied weights appear once, under their first name
    loaded: set[str] = set()
    for name, tensor in named_tensors:
        if name.endswith("rotary_emb.inv_freq"):
            continue  # old checkpoints store the RoPE table; we compute it
        if name == "lm_head.weight" and model.config.tie_word_embeddings:
            continue
        target, shard_id = _packed_name(model, name)
        if target not in params:
            raise ValueError(f"checkpoint tensor {name!r} has no place in {type(model).__name__}")
        param = params[target]
        weight_loader = getattr(param, "weight_loader", default_weight_loader)
        with torch.no_grad():
            weight_loader(param, tensor.to(param.dtype), shard_id)
        loaded.add(f"{target}:{shard_id}")
    return loaded


def _packed_name(model: LlamaForCausalLM, name: str) -> tuple[str, str | int | None]:
    for source, (packed, shard_id) in model.packed_modules_mapping.items():
        if f".{source}." in name:
            return name.replace(f".{source}.", f".{packed}."), shard_id
    return name, None


def _check_complete(model: LlamaForCausalLM, params: dict[str, nn.Parameter], loaded: set[str]) -> None:
    missing = []
    for name in params:
        owner = model.get_submodule(name.rsplit(".", 1)[0])
        shards = getattr(owner, "shard_offsets", None) or {None: None}
        missing += [f"{name}[{s}]" if s is not None else name for s in shards if f"{name}:{s}" not in loaded]
    if missing:
        raise ValueError(f"checkpoint is missing {len(missing)} weights, e.g. {missing[:3]}")
