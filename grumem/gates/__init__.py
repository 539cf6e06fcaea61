"""The gates the loop decides with (`--gates`): the gate prior on an untrained model ("prior",
grumem/agent/gate_prior.py), the model's own gates ("own"), or gates trained with `grumem train` ("learned": a LoRA
adapter of the default model, shipped in this folder; one installed in the user cache with
`python -m grumem.gates DIR` takes its place).
An adapter saved by `grumem train` carries the loop settings it was trained under (SETTINGS_FILE: how it thinks,
its chunk size); the CLI takes them as defaults wherever that adapter is used."""
import json
import os
from pathlib import Path

from grumem.engine.adapters import WEIGHTS_FILE
from grumem.engine.models.registry import DEFAULT_MODEL, cache_dir

GATES = ("prior", "own", "learned")
SETTINGS_FILE = "grumem_loop.json"
SHIPPED = Path(__file__).parent / DEFAULT_MODEL


def learned_gates_dir(model: str = DEFAULT_MODEL) -> Path:
    """Where `python -m grumem.gates DIR` installs learned gates."""
    return Path(cache_dir()) / "gates" / model


def learned_adapter(model: str) -> str:
    """The folder of the learned gates of `model`: those installed in the user cache, else those shipped."""
    if model != DEFAULT_MODEL:
        raise ValueError(f"learned gates are trained for {DEFAULT_MODEL} only; for {model!r} pass an adapter "
                         "itself: --adapter DIR --gates own")
    for folder in (learned_gates_dir(model), SHIPPED):
        if (folder / WEIGHTS_FILE).is_file():
            return os.fspath(folder)
    raise FileNotFoundError(f"no learned gates for {model} in {learned_gates_dir(model)} or {SHIPPED}: train them "
                            "(grumem train --save DIR) and install them (python -m grumem.gates DIR)")


def trained_settings(adapter: str) -> dict:
    """The loop settings an adapter was trained under (AgentConfig fields), {} when it does not say."""
    path = Path(adapter) / SETTINGS_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
