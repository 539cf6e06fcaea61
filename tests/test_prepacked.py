"""oneDNN-prepacked CPU linears: the same logits as the plain weights, and training still sees the plain ones."""
import pytest
import torch

from helpers import forward_logits
from grumem.engine.layers.prepacked import can_prepack, prepack_linears
from grumem.engine.models.registry import load_model

pytestmark = pytest.mark.skipif(not can_prepack(torch.empty(1)), reason="no oneDNN linear ops in this torch build")

TOLERANCES = {torch.float32: dict(atol=1e-4, rtol=1e-4), torch.bfloat16: dict(atol=5e-2, rtol=2e-2)}


@pytest.mark.parametrize("dtype", TOLERANCES, ids=str)
def test_prepacked_logits_equal_plain(tiny_qwen2_path, dtype):  # qwen2: biased q/k/v linears
    if not can_prepack(torch.empty(1, dtype=dtype)):
        pytest.skip(f"oneDNN cannot reorder {dtype} weights on this CPU")
    model = load_model(tiny_qwen2_path, dtype=dtype)
    prompts = [list(range(5, 40)), [7]]  # many rows and a single row
    plain = forward_logits(model, prompts)
    prepack_linears(model)
    assert model.lm_head.prepacked is not None and model.model.layers[0].mlp.down_proj.prepacked is not None
    for a, b in zip(forward_logits(model, prompts), plain):
        torch.testing.assert_close(a.float(), b.float(), **TOLERANCES[dtype])


def test_grad_mode_uses_the_plain_weight(tiny_llama_path):
    model = load_model(tiny_llama_path)
    prepack_linears(model)
    proj = model.model.layers[0].mlp.down_proj
    x = torch.randn(3, proj.weight.shape[1])
    proj(x).sum().backward()
    assert proj.weight.grad is not None and proj.weight.grad.abs().sum() > 0
