"""The gates the loop decides with (`--gates`): the gate prior on an untrained model ("prior",
grumem/agent/gate_prior.py), the model's own gates ("own"), or the gates trained with `grumem train` and shipped
here as a LoRA adapter of the default model ("learned"; smollm2-135m/TRAINING.md says how they were made)."""
from pathlib import Path

from grumem.engine.models.registry import DEFAULT_MODEL

GATES = ("prior", "own", "learned")
SHIPPED = {DEFAULT_MODEL: Path(__file__).parent / DEFAULT_MODEL}


def shipped_adapter(model: str) -> str:
    """The folder of the learned gates shipped for `model`."""
    if model not in SHIPPED:
        raise ValueError(f"learned gates ship for {', '.join(SHIPPED)} only; for {model!r} train an adapter "
                         "(grumem train --save DIR) and pass --adapter DIR --gates own")
    folder = SHIPPED[model]
    if not (folder / "adapter_model.safetensors").is_file():
        raise FileNotFoundError(f"the learned gates of {model} are missing from {folder}; reinstall grumem")
    return str(folder)
