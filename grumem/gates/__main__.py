"""python -m grumem.gates ADAPTER_DIR [TARGET_DIR]: installs a trained adapter (grumem train --save) as the learned
gates of the default model (`--gates learned`; TARGET_DIR default: the user cache): bf16 weights (half the size; the
engine merges in fp32), the base model named by its registry name rather than a local path, the loop settings it was
trained under, peft's generated model card left out."""
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from grumem.engine.adapters import CONFIG_FILE, WEIGHTS_FILE
from grumem.engine.models.registry import DEFAULT_MODEL
from grumem.gates import SETTINGS_FILE, learned_gates_dir


def install(source: Path, target: Path) -> None:
    config = json.loads((source / CONFIG_FILE).read_text(encoding="utf-8"))
    config["base_model_name_or_path"] = DEFAULT_MODEL
    target.mkdir(parents=True, exist_ok=True)
    (target / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    weights = {name: t.to(torch.bfloat16) for name, t in load_file(source / WEIGHTS_FILE).items()}
    save_file(weights, target / WEIGHTS_FILE)
    if (source / SETTINGS_FILE).is_file():
        (target / SETTINGS_FILE).write_text((source / SETTINGS_FILE).read_text(encoding="utf-8"), encoding="utf-8")


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit("usage: python -m grumem.gates ADAPTER_DIR [TARGET_DIR]")
    target = Path(sys.argv[2]) if len(sys.argv) == 3 else learned_gates_dir()
    install(Path(sys.argv[1]), target)
    print(f"installed {sys.argv[1]} in {target} as the learned gates of {DEFAULT_MODEL}: grumem run --gates learned")
