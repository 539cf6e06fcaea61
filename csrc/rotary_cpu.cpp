// Rotary position embedding (neox half-rotation) of q and k in one pass: x' = [x1 cos - x2 sin, x2 cos + x1 sin]
// with cos/sin read from the (max_position, head_dim) [cos | sin] fp32 cache at each token's position. Torch needs
// an index, two chunks, six multiplies and adds and a cat per tensor. The math is in fp32 and rounds once.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include "ops.h"

namespace {

template <typename scalar_t>
void rotate_rows(const scalar_t* x, scalar_t* out, int64_t heads, int64_t half, const float* cos, const float* sin) {
  for (int64_t h = 0; h < heads; ++h) {
    const scalar_t* xh = x + h * 2 * half;
    scalar_t* oh = out + h * 2 * half;
    for (int64_t j = 0; j < half; ++j) {
      const float x1 = static_cast<float>(xh[j]), x2 = static_cast<float>(xh[half + j]);
      oh[j] = static_cast<scalar_t>(x1 * cos[j] - x2 * sin[j]);
      oh[half + j] = static_cast<scalar_t>(x2 * cos[j] + x1 * sin[j]);
    }
  }
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> rotary_embedding(const at::Tensor& positions, const at::Tensor& q,
                                                    const at::Tensor& k, const at::Tensor& cos_sin_cache) {
  TORCH_CHECK(q.dim() == 3 && k.dim() == 3 && q.size(0) == k.size(0) && q.size(2) == k.size(2),
              "q (tokens, heads, head_dim) and k (tokens, kv_heads, head_dim) expected");
  TORCH_CHECK(q.size(2) % 2 == 0 && cos_sin_cache.dim() == 2 && cos_sin_cache.size(1) == q.size(2),
              "the cache must be (max_position, head_dim) and head_dim even");
  TORCH_CHECK(cos_sin_cache.scalar_type() == at::kFloat && positions.scalar_type() == at::kLong,
              "fp32 cache and int64 positions expected");
  TORCH_CHECK(q.scalar_type() == k.scalar_type(), "q and k must share a dtype");
  const auto qc = q.contiguous(), kc = k.contiguous();
  const auto cache = cos_sin_cache.contiguous(), pos = positions.contiguous();
  const int64_t tokens = q.size(0), half = q.size(2) / 2, max_position = cache.size(0);
  auto q_out = at::empty_like(qc), k_out = at::empty_like(kc);
  const int64_t* pp = pos.data_ptr<int64_t>();
  for (int64_t t = 0; t < tokens; ++t) TORCH_CHECK(pp[t] >= 0 && pp[t] < max_position, "position out of range");
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, q.scalar_type(), "rotary_embedding", [&] {
    const float* cp = cache.data_ptr<float>();
    const int64_t q_row = q.size(1) * 2 * half, k_row = k.size(1) * 2 * half;
    const scalar_t *qp = qc.data_ptr<scalar_t>(), *kp = kc.data_ptr<scalar_t>();
    scalar_t *qo = q_out.data_ptr<scalar_t>(), *ko = k_out.data_ptr<scalar_t>();
    at::parallel_for(0, tokens, 64, [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) {
        const float* cos = cp + pp[t] * 2 * half;
        rotate_rows(qp + t * q_row, qo + t * q_row, q.size(1), half, cos, cos + half);
        rotate_rows(kp + t * k_row, ko + t * k_row, k.size(1), half, cos, cos + half);
      }
    });
  });
  return {q_out, k_out};
}
