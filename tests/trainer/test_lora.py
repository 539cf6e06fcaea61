"""LoRA (peft, every linear layer): its gradients are the full-weight gradient carried through the adapter, a saved
adapter reloads (in the trainer and merged into the engine) to the same logprobs, the engine serves the merged
weights after an update, and an adapter that does not fit its base model is refused in one line."""
import itertools

import pytest
import torch
from peft.tuners.lora import LoraLayer
from safetensors.torch import load_file, save_file
from transformers import LlamaConfig

from helpers import TINY, save_hf_checkpoint
from grumem.engine import LLM
from grumem.tasks.hard_niah import training_stream
from grumem.trainer import Policy
from grumem.trainer.policy import LoraSettings
from grumem.trainer.warm_start import WarmStart, WarmStartConfig
from test_warm_start import AGENT, assert_engine_serves


@pytest.fixture
def llm(tiny_llama_path):
    return LLM(tiny_llama_path, num_kvcache_blocks=512)


@pytest.fixture
def documents(llm):
    return list(itertools.islice(training_stream(llm.tokenizer, 768, seed=2), 2))


def lora_policy(path) -> Policy:
    policy = Policy(path, lora=LoraSettings(rank=4, alpha=8.0))
    with torch.no_grad():  # peft starts B at zero, where every A gradient vanishes: start elsewhere
        for name, param in policy.model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05)
    return policy


def labelled(llm, policy, documents):
    return WarmStart(llm, policy, AGENT, WarmStartConfig(documents_per_step=2)).rows(iter(documents))


def test_lora_gradients_are_the_full_weight_gradient_through_the_adapter(llm, tiny_llama_path, documents):
    lora, full = lora_policy(tiny_llama_path), Policy(tiny_llama_path)
    merged = dict(lora.named_tensors())
    with torch.no_grad():
        for name, param in full.model.named_parameters():
            param.copy_(merged[name])
    rows = labelled(llm, lora, documents)
    lora_loss, full_loss = -lora.token_logprobs(rows, 1.0).sum(), -full.token_logprobs(rows, 1.0).sum()
    torch.testing.assert_close(lora_loss, full_loss, rtol=1e-5, atol=1e-4)
    lora_loss.backward()
    full_loss.backward()
    full_grads = {name: p.grad for name, p in full.model.named_parameters()}
    modules = [(name, m) for name, m in lora.base.named_modules() if isinstance(m, LoraLayer)]
    assert len(modules) == 7 * TINY["num_hidden_layers"]  # q k v o gate up down
    for name, module in modules:
        a, b = module.lora_A["default"].weight, module.lora_B["default"].weight
        scale, weight_grad = module.scaling["default"], full_grads[f"{name}.weight"]
        torch.testing.assert_close(a.grad, scale * b.T @ weight_grad, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(b.grad, scale * weight_grad @ a.T, rtol=1e-4, atol=1e-6)
    assert all(p.grad is None for n, p in lora.model.named_parameters() if "lora_" not in n)  # the base is frozen


def test_a_saved_adapter_reloads_to_the_same_logprobs_in_the_trainer_and_the_engine(llm, tiny_llama_path, documents,
                                                                                   tmp_path):
    policy = lora_policy(tiny_llama_path)
    policy.save(str(tmp_path))
    rows = labelled(llm, policy, documents)
    reloaded = Policy(tiny_llama_path, adapter=str(tmp_path))
    with torch.no_grad():
        torch.testing.assert_close(reloaded.token_logprobs(rows, 1.0), policy.token_logprobs(rows, 1.0))
    assert_engine_serves(LLM(tiny_llama_path, adapter=str(tmp_path), num_kvcache_blocks=256), policy, rows[0])
    assert any(p.requires_grad for p in reloaded.parameters())  # training goes on from it


def test_the_engine_serves_the_merged_weights_after_a_lora_update(llm, tiny_llama_path, documents):
    policy = Policy(tiny_llama_path, lora=LoraSettings(rank=4, alpha=8.0))
    trainer = WarmStart(llm, policy, AGENT, WarmStartConfig(documents_per_step=2, lr=1e-2))
    trainer.step(itertools.cycle(documents))
    rows = trainer.rows(iter(documents))
    assert_engine_serves(llm, policy, rows[0])


def test_an_adapter_that_does_not_fit_its_base_is_refused(tiny_llama_path, tmp_path, tokenizer):
    adapter = tmp_path / "adapter"
    lora_policy(tiny_llama_path).save(str(adapter))
    wider = LlamaConfig(**{**TINY, "intermediate_size": 2 * TINY["intermediate_size"]}, rope_theta=1e4,
                        tie_word_embeddings=False, architectures=["LlamaForCausalLM"])
    other = save_hf_checkpoint(wider, tmp_path / "wider", tokenizer)
    with pytest.raises(ValueError, match=r"does not match the base model: model\.layers\.0\.mlp\.\w+_proj\.weight is"):
        LLM(other, adapter=str(adapter), num_kvcache_blocks=64)
    with pytest.raises(ValueError, match="random weights"):
        LLM("qwen2.5-3b", adapter=str(adapter), num_kvcache_blocks=64)
    with pytest.raises(FileNotFoundError, match="not a LoRA adapter folder"):
        LLM(tiny_llama_path, adapter=str(tmp_path / "wider"), num_kvcache_blocks=64)
    weights = load_file(adapter / "adapter_model.safetensors")
    save_file({k.replace("q_proj", "attn_q"): v for k, v in weights.items()}, adapter / "adapter_model.safetensors")
    with pytest.raises(ValueError, match="which the checkpoint does not have"):
        LLM(tiny_llama_path, adapter=str(adapter), num_kvcache_blocks=64)
