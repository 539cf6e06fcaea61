"""Our Llama/Qwen2 implementation against transformers: logits and greedy continuations."""
import pytest
import torch
from transformers import AutoModelForCausalLM

from helpers import forward_logits
from grumem.engine.models.registry import load_model, load_tokenizer

# NOTE: fp32 differences come only from summation order (SDPA vs per-sequence attention, fused qkv matmul)
FP32_TOL = dict(atol=2e-4, rtol=1e-4)


def hf_logits(path: str, prompts: list[list[int]], dtype=torch.float32) -> list[torch.Tensor]:
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).eval()
    with torch.no_grad():
        return [model(torch.tensor([p])).logits[0] for p in prompts]


def random_prompts(vocab: int, lens: list[int]) -> list[list[int]]:
    return [torch.randint(0, vocab, (n,)).tolist() for n in lens]


@pytest.mark.parametrize("fixture", ["tiny_llama_path", "tiny_qwen2_path"])
def test_tiny_logits_match_transformers(fixture, request):
    path = request.getfixturevalue(fixture)
    prompts = random_prompts(320, [1, 17, 40])  # a varlen batch: sequences must not see each other
    ours = forward_logits(load_model(path), prompts)
    for a, b in zip(ours, hf_logits(path, prompts)):
        torch.testing.assert_close(a, b, **FP32_TOL)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_tiny_half_precision_close_to_transformers(tiny_qwen2_path, dtype):
    prompts = random_prompts(320, [23])
    ours = forward_logits(load_model(tiny_qwen2_path, dtype=dtype), prompts)[0]
    ref = hf_logits(tiny_qwen2_path, prompts, dtype)[0]
    assert ours.dtype == dtype
    # NOTE: one bf16 ulp at |logit| ~ 1 is 8e-3; a few roundings differ between the two implementations
    torch.testing.assert_close(ours.float(), ref.float(), atol=3e-2, rtol=3e-2)


@pytest.mark.parametrize(
    "rope_parameters",
    [
        {"rope_type": "linear", "factor": 4.0},
        {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
         "original_max_position_embeddings": 128},
        {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 128},
    ],
    ids=lambda p: p["rope_type"],
)
def test_rope_scaling_matches_transformers(tmp_path, rope_parameters, tokenizer):
    from transformers import LlamaConfig

    from helpers import TINY, save_hf_checkpoint

    config = LlamaConfig(**TINY, rope_parameters={**rope_parameters, "rope_theta": 1e4}, architectures=["LlamaForCausalLM"])
    path = save_hf_checkpoint(config, tmp_path, tokenizer)
    prompts = random_prompts(320, [300])  # past original_max_position_embeddings, where scaling matters
    torch.testing.assert_close(forward_logits(load_model(path), prompts)[0], hf_logits(path, prompts)[0], **FP32_TOL)


@pytest.fixture(scope="module")
def smollm2(smollm2_path):
    return load_model(smollm2_path), AutoModelForCausalLM.from_pretrained(smollm2_path, dtype=torch.float32).eval()


def test_smollm2_logits_match_transformers(smollm2):
    ours, hf = smollm2
    tokenizer = load_tokenizer()
    prompts = [tokenizer.encode(t) for t in ["The capital of France is", "Numbers: 12345 and 67890, then"]]
    for prompt, logits in zip(prompts, forward_logits(ours, prompts)):
        with torch.no_grad():
            ref = hf(torch.tensor([prompt])).logits[0]
        torch.testing.assert_close(logits, ref, atol=1e-3, rtol=1e-4)  # |logits| reach ~30


def test_smollm2_greedy_continuation_matches_generate(smollm2):
    ours, hf = smollm2
    tokenizer = load_tokenizer()
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)
    expected = hf.generate(torch.tensor([prompt]), max_new_tokens=12, do_sample=False)[0, len(prompt):].tolist()
    ids = list(prompt)
    for _ in range(12):  # cache-free greedy decoding: the whole sequence each step
        ids.append(int(forward_logits(ours, [ids])[0][-1].argmax()))
        if ids[-1] == tokenizer.eos_token_id:
            break
    assert ids[len(prompt):] == expected
    assert "Paris" in tokenizer.decode(expected)
