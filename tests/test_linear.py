"""The CPU linear helper: same product as F.linear whichever GEMM form it picks."""
import pytest
import torch
import torch.nn.functional as F

from grumem.engine.layers.linear import SKINNY_MAX_ROWS, linear


@pytest.mark.parametrize("rows", [0, 1, 2, 16, SKINNY_MAX_ROWS, SKINNY_MAX_ROWS + 1])
@pytest.mark.parametrize("bias", [False, True])
def test_linear_matches_f_linear(rows, bias):
    g = torch.Generator().manual_seed(rows)
    x, weight = torch.randn(rows, 96, generator=g), torch.randn(160, 96, generator=g)
    b = torch.randn(160, generator=g) if bias else None
    out = linear(x, weight, b)
    assert out.shape == (rows, 160) and out.is_contiguous()
    torch.testing.assert_close(out, F.linear(x, weight, b), atol=1e-5, rtol=1e-5)
