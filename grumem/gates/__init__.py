"""The gates the loop decides with (`--gates`): the gate prior on an untrained model ("prior",
grumem/agent/gate_prior.py), the model's own gates ("own"), or gates trained with `grumem train` and installed for
the default model ("learned": a LoRA adapter in the user cache, installed with `python -m grumem.gates DIR`).
No trained gates ship in the package yet: the warm start has not reached the gate prior's accuracy (README)."""
import os
from pathlib import Path

from grumem.engine.models.registry import DEFAULT_MODEL, cache_dir

GATES = ("prior", "own", "learned")


def learned_gates_dir(model: str = DEFAULT_MODEL) -> Path:
    return Path(cache_dir()) / "gates" / model


def learned_adapter(model: str) -> str:
    """The folder of the learned gates installed for `model`."""
    if model != DEFAULT_MODEL:
        raise ValueError(f"learned gates are installed for {DEFAULT_MODEL} only; for {model!r} pass the adapter "
                         "itself: --adapter DIR --gates own")
    folder = learned_gates_dir(model)
    if not (folder / "adapter_model.safetensors").is_file():
        raise FileNotFoundError(f"no learned gates installed for {model} in {folder}: train them (grumem train "
                                "--warm-start-steps 40 --save DIR) and install them (python -m grumem.gates DIR)")
    return os.fspath(folder)
