"""LoRA adapters as peft saves them (adapter_config.json, adapter_model.safetensors), merged into a checkpoint's
weights as they load: W + scale * B @ A, scale = alpha / r (alpha / sqrt(r) with rsLoRA). The engine then packs and
serves the merged weights, so an adapter costs nothing per token."""
import json
import math
import os
from dataclasses import dataclass

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

CONFIG_FILE, WEIGHTS_FILE = "adapter_config.json", "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."


@dataclass(slots=True)
class LoraAdapter:
    scale: float
    factors: dict[str, tuple[torch.Tensor, torch.Tensor]]  # checkpoint weight name -> (A: r x in, B: out x r)


def read_adapter(folder: str) -> LoraAdapter:
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not os.path.isfile(os.path.join(folder, name)):
            raise FileNotFoundError(f"no {name} in {folder!r}: not a LoRA adapter folder (peft's save_pretrained)")
    with open(os.path.join(folder, CONFIG_FILE), encoding="utf-8") as f:
        config = json.load(f)
    if config.get("peft_type") != "LORA" or config.get("use_dora") or config.get("fan_in_fan_out"):
        raise ValueError(f"{folder!r} is not a plain LoRA adapter (peft_type {config.get('peft_type')!r}, DoRA and "
                         "fan_in_fan_out are not supported)")
    rank, alpha = config["r"], config["lora_alpha"]
    scale = alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank
    try:
        tensors = load_file(os.path.join(folder, WEIGHTS_FILE))
    except SafetensorError as e:
        raise ValueError(f"corrupt adapter weights in {folder!r}: {e}") from e
    factors = {}
    for key, a in tensors.items():
        if key.endswith(".lora_A.weight"):
            module = key.removeprefix(PEFT_PREFIX).removesuffix(".lora_A.weight")
            b = tensors.get(f"{PEFT_PREFIX}{module}.lora_B.weight")
            if b is None:
                raise ValueError(f"adapter in {folder!r} has lora_A but no lora_B for {module}")
            factors[f"{module}.weight"] = (a, b)
    if not factors:
        raise ValueError(f"adapter in {folder!r} holds no LoRA weights")
    return LoraAdapter(scale, factors)


def merge_adapter(named_tensors, adapter: LoraAdapter):
    """The checkpoint's (name, tensor) pairs with the adapter's updates added; raises when they do not fit."""
    missing = set(adapter.factors)
    for name, tensor in named_tensors:
        if name in adapter.factors:
            a, b = adapter.factors[name]
            if tensor.dim() != 2 or (b.shape[0], a.shape[1]) != tuple(tensor.shape):
                raise ValueError(f"the adapter does not match the base model: {name} is {tuple(tensor.shape)}, the "
                                 f"adapter's update is {b.shape[0]}x{a.shape[1]}")
            tensor = (tensor.float() + adapter.scale * (b.float() @ a.float())).to(tensor.dtype)
            missing.discard(name)
        yield name, tensor
    if missing:
        raise ValueError(f"the adapter does not match the base model: it adapts {sorted(missing)[0]!r}, which the "
                         "checkpoint does not have")
