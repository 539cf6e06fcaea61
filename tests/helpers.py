"""Test helpers shared across files: tiny model shapes, HF checkpoints of them, a cache-free forward pass."""
import torch
from transformers import AutoModelForCausalLM

from grumem.engine.context import reset_context, set_context

TINY = dict(
    vocab_size=49152,  # SmolLM2's vocabulary, so its tokenizer drives the tiny models too
    hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, max_position_embeddings=512, rms_norm_eps=1e-6,
)


def save_hf_checkpoint(config, folder, tokenizer) -> str:
    """A random-weight HF checkpoint with the tokenizer beside it."""
    torch.manual_seed(1234)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():  # HF zero-inits biases; random ones test that they are loaded
        for name, param in model.named_parameters():
            if name.endswith(".bias"):
                param.normal_(0, 0.1)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def forward_logits(model, prompts: list[list[int]]) -> list[torch.Tensor]:
    """All-position logits for a varlen batch, without a KV cache: (len_i, vocab) per prompt."""
    device = next(model.parameters()).device
    lens = [len(p) for p in prompts]
    cu_seqlens = torch.tensor([0] + lens, dtype=torch.int32, device=device).cumsum(0, dtype=torch.int32)
    input_ids = torch.tensor([t for p in prompts for t in p], device=device)
    positions = torch.cat([torch.arange(n, device=device) for n in lens])
    set_context(is_prefill=True, cu_seqlens_q=cu_seqlens, cu_seqlens_k=cu_seqlens, max_seqlen_q=max(lens),
                max_seqlen_k=max(lens))
    try:
        with torch.no_grad():
            logits = model.compute_logits(model(input_ids, positions))
    finally:
        reset_context()
    return list(logits.split(lens))
