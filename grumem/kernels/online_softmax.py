"""Triton: one key block of flash attention's online softmax, shared by the decode and prefill kernels."""
import triton
import triton.language as tl


@triton.jit
def online_softmax_update(s, v, m_i, l_i, acc, PRECISION: tl.constexpr):
    """Scores s (M, N), -inf where masked, and values v (N, D) update the running max m_i (M,), sum l_i (M,) and
    unnormalised output acc (M, D); returns the three."""
    m_new = tl.maximum(m_i, tl.max(s, axis=1))
    m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # a row that sees no key yet stays empty, not NaN
    p = tl.exp(s - m_safe[:, None])
    alpha = tl.exp(m_i - m_safe)
    l_i = l_i * alpha + tl.sum(p, axis=1)
    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
    return m_new, l_i, acc
