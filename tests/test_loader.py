"""Model loading: named models, checkpoint folders and the errors a user sees on bad input."""
import json
import os
import shutil

import pytest
import torch

from grumem.engine.loader import load_config, model_class
from grumem.engine.models.registry import load_model


def copy_checkpoint(src: str, dst) -> str:
    shutil.copytree(src, dst)
    return str(dst)


def test_unknown_model_name():
    with pytest.raises(ValueError, match="unknown model 'no-such-model'.*smollm2-135m"):
        load_model("no-such-model")


def test_folder_without_config(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_model(str(tmp_path))


def test_missing_weights_file(tiny_llama_path, tmp_path):
    path = copy_checkpoint(tiny_llama_path, tmp_path / "ckpt")
    os.remove(os.path.join(path, "model.safetensors"))
    with pytest.raises(FileNotFoundError, match=r"no \*.safetensors"):
        load_model(path)


def test_corrupt_weights_file(tiny_llama_path, tmp_path):
    path = copy_checkpoint(tiny_llama_path, tmp_path / "ckpt")
    with open(os.path.join(path, "model.safetensors"), "r+b") as f:
        f.write(b"\xff" * 64)
    with pytest.raises(ValueError, match="corrupt checkpoint file"):
        load_model(path)


def test_incomplete_checkpoint_names_missing_weights(tiny_llama_path, tmp_path):
    from safetensors.torch import load_file, save_file

    path = copy_checkpoint(tiny_llama_path, tmp_path / "ckpt")
    file = os.path.join(path, "model.safetensors")
    state = load_file(file)
    del state["model.layers.1.self_attn.k_proj.weight"]
    save_file(state, file)
    with pytest.raises(ValueError, match=r"missing 1 weights.*layers\.1\.self_attn\.qkv_proj\.weight\[k\]"):
        load_model(path)


def test_unsupported_architecture(tiny_llama_path, tmp_path):
    path = copy_checkpoint(tiny_llama_path, tmp_path / "ckpt")
    config_file = os.path.join(path, "config.json")
    config = json.load(open(config_file))
    config.update(architectures=["GPT2LMHeadModel"], model_type="gpt2")
    json.dump(config, open(config_file, "w"))
    with pytest.raises(ValueError, match="unsupported architecture.*GPT2LMHeadModel"):
        model_class(load_config(path))


def test_bad_dtype(tiny_llama_path):
    with pytest.raises(ValueError, match="unsupported dtype 'float8'"):
        load_model(tiny_llama_path, dtype="float8")


def test_packed_weights_land_in_their_slices(tiny_llama_path):
    from safetensors.torch import load_file

    state = load_file(os.path.join(tiny_llama_path, "model.safetensors"))
    model = load_model(tiny_llama_path)
    qkv = model.model.layers[0].self_attn.qkv_proj.weight
    q, k, v = (state[f"model.layers.0.self_attn.{n}_proj.weight"] for n in "qkv")
    torch.testing.assert_close(qkv, torch.cat([q, k, v]), rtol=0, atol=0)
    gate_up = model.model.layers[1].mlp.gate_up_proj.weight
    up = state["model.layers.1.mlp.up_proj.weight"]
    torch.testing.assert_close(gate_up[up.shape[0]:], up, rtol=0, atol=0)


def test_random_model_of_a_real_shape():
    model = load_model("qwen2.5-0.5b", dtype="bfloat16", seed=3)
    config = model.config
    assert (config.hidden_size, config.num_hidden_layers, config.num_key_value_heads) == (896, 24, 2)
    assert model.lm_head.weight is model.model.embed_tokens.weight  # tied, as published
    attn = model.model.layers[0].self_attn
    assert attn.qkv_proj.bias is not None and attn.o_proj.bias is None  # Qwen2: q/k/v biases only
    assert model.model.layers[3].mlp.down_proj.weight.float().std().item() == pytest.approx(0.02, rel=0.05)


def test_random_weights_depend_only_on_the_seed(tiny_llama_path):
    from grumem.engine.loader import build_model, init_random_weights

    def weights(seed):
        model = build_model(load_config(tiny_llama_path), torch.float32, "cpu")
        init_random_weights(model, seed)
        return torch.cat([p.flatten() for p in model.parameters()])

    torch.testing.assert_close(weights(7), weights(7), rtol=0, atol=0)
    assert not torch.equal(weights(7), weights(8))
