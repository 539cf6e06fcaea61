// RMSNorm fused with the residual add before it, in one pass per row: r = x + residual; out = w * (r / rms(r)).
// Unfused, torch runs eight kernels per norm (add, cast, pow, mean, add, rsqrt, mul, mul): at decode's few rows
// their launches cost more than the arithmetic, 61 norms per SmolLM2 step. The variance is taken in fp32 as in
// transformers; as there, the normalised row is rounded to x's dtype before the weight multiplies it.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <cmath>

#include "ops.h"

std::tuple<at::Tensor, at::Tensor> fused_add_rms_norm(const at::Tensor& x, const c10::optional<at::Tensor>& residual,
                                                      const at::Tensor& weight, double eps) {
  TORCH_CHECK(x.dim() == 2 && weight.dim() == 1 && weight.size(0) == x.size(1), "x (rows, d) and weight (d,) expected");
  TORCH_CHECK(weight.scalar_type() == x.scalar_type(), "weight and x must share a dtype");
  TORCH_CHECK(!residual.has_value() || residual->sizes() == x.sizes() && residual->scalar_type() == x.scalar_type(),
              "residual must match x");
  const auto input = x.contiguous(), w = weight.contiguous();
  const auto res_in = residual.has_value() ? residual->contiguous() : at::Tensor();
  const int64_t rows = input.size(0), d = input.size(1);
  auto out = at::empty_like(input);
  auto res_out = residual.has_value() ? at::empty_like(input) : input;
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, input.scalar_type(), "fused_add_rms_norm", [&] {
    const scalar_t *xp = input.data_ptr<scalar_t>(), *wp = w.data_ptr<scalar_t>();
    const scalar_t* rp = residual.has_value() ? res_in.data_ptr<scalar_t>() : nullptr;
    scalar_t *op = out.data_ptr<scalar_t>(), *sp = res_out.data_ptr<scalar_t>();
    at::parallel_for(0, rows, std::max<int64_t>(1, 32768 / std::max<int64_t>(d, 1)), [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const scalar_t* xr = xp + r * d;
        scalar_t* sr = sp + r * d;
        if (rp != nullptr)
          for (int64_t j = 0; j < d; ++j) sr[j] = xr[j] + rp[r * d + j];  // rounded to the dtype, as torch's add
        float sum = 0.f;
        for (int64_t j = 0; j < d; ++j) sum += static_cast<float>(sr[j]) * static_cast<float>(sr[j]);
        const float inv_rms = 1.f / std::sqrt(sum / static_cast<float>(d) + static_cast<float>(eps));
        scalar_t* orow = op + r * d;
        for (int64_t j = 0; j < d; ++j)
          orow[j] = wp[j] * static_cast<scalar_t>(static_cast<float>(sr[j]) * inv_rms);
      }
    });
  });
  return {out, res_out};
}
