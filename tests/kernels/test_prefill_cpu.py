"""The CPU backend's prefill (prefix and new tokens merged by log-sum-exp) against the torch reference."""
import pytest
import torch

from grumem.kernels.prefill_cpu import prefill_attention_cpu
from grumem.kernels.reference import prefill_attention_ref
from paged_kv import make_paged_kv


@pytest.mark.parametrize("num_heads, num_kv_heads", [(4, 4), (9, 3)])
def test_prefill_after_a_cached_prefix_matches_reference(num_heads, num_kv_heads):
    lens_k, lens_q = [17, 50, 30, 5], [1, 20, 30, 5]  # prefixes of 16, 30, 0 and 0 tokens
    k_cache, v_cache, tables, dense_k, dense_v = make_paged_kv(lens_k, num_kv_heads, 64, 16)
    q = torch.randn(sum(lens_q), num_heads, 64)
    new_k = torch.cat([dk[-n:] for dk, n in zip(dense_k, lens_q)])
    new_v = torch.cat([dv[-n:] for dv, n in zip(dense_v, lens_q)])
    cu_q = torch.tensor([0] + lens_q).cumsum(0).int()
    cu_k = torch.tensor([0] + lens_k).cumsum(0).int()
    args = (q, new_k, new_v, cu_q, cu_k, 0.125, k_cache, v_cache, tables)
    torch.testing.assert_close(prefill_attention_cpu(*args), prefill_attention_ref(*args), atol=1e-5, rtol=1e-5)
