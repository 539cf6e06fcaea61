// Paged decode attention on the CPU: parallel over (sequence, kv head); the query heads of a GQA group share
// each K/V row read, so the cache is streamed once per step. Softmax and accumulation in fp32.
#include <ATen/Parallel.h>
#include <ATen/Dispatch.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "ops.h"

namespace {

template <typename scalar_t>
void decode_one_group(const scalar_t* q, const scalar_t* k_cache, const scalar_t* v_cache, const int32_t* block_table,
                      int64_t context_len, int64_t block_size, int64_t group, int64_t head_dim,
                      int64_t row_stride, int64_t block_stride, float scale, scalar_t* out, int64_t q_head_stride) {
  std::vector<float> qf(group * head_dim), scores(group * context_len), acc(group * head_dim, 0.f);
  for (int64_t g = 0; g < group; ++g)
    for (int64_t d = 0; d < head_dim; ++d) qf[g * head_dim + d] = static_cast<float>(q[g * q_head_stride + d]) * scale;

  std::vector<float> row(head_dim);
  for (int64_t t = 0; t < context_len; ++t) {
    const scalar_t* k = k_cache + block_table[t / block_size] * block_stride + (t % block_size) * row_stride;
    for (int64_t d = 0; d < head_dim; ++d) row[d] = static_cast<float>(k[d]);
    for (int64_t g = 0; g < group; ++g) {
      float s = 0.f;
      const float* qg = qf.data() + g * head_dim;
      for (int64_t d = 0; d < head_dim; ++d) s += qg[d] * row[d];
      scores[g * context_len + t] = s;
    }
  }
  for (int64_t g = 0; g < group; ++g) {
    float* sg = scores.data() + g * context_len;
    const float max_score = *std::max_element(sg, sg + context_len);
    float sum = 0.f;
    for (int64_t t = 0; t < context_len; ++t) sum += (sg[t] = std::exp(sg[t] - max_score));
    for (int64_t t = 0; t < context_len; ++t) sg[t] /= sum;
  }
  for (int64_t t = 0; t < context_len; ++t) {
    const scalar_t* v = v_cache + block_table[t / block_size] * block_stride + (t % block_size) * row_stride;
    for (int64_t d = 0; d < head_dim; ++d) row[d] = static_cast<float>(v[d]);
    for (int64_t g = 0; g < group; ++g) {
      const float p = scores[g * context_len + t];
      float* ag = acc.data() + g * head_dim;
      for (int64_t d = 0; d < head_dim; ++d) ag[d] += p * row[d];
    }
  }
  for (int64_t g = 0; g < group; ++g)
    for (int64_t d = 0; d < head_dim; ++d) out[g * q_head_stride + d] = static_cast<scalar_t>(acc[g * head_dim + d]);
}

}  // namespace

at::Tensor paged_attention_decode(const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& v_cache,
                                  const at::Tensor& block_tables, const at::Tensor& context_lens, double scale) {
  TORCH_CHECK(q.dim() == 3 && k_cache.dim() == 4, "q must be (seqs, heads, dim), caches (blocks, block_size, kv_heads, dim)");
  TORCH_CHECK(q.is_contiguous() && k_cache.is_contiguous() && v_cache.is_contiguous(), "inputs must be contiguous");
  TORCH_CHECK(k_cache.sizes() == v_cache.sizes() && q.scalar_type() == k_cache.scalar_type(), "cache shape/dtype mismatch");
  TORCH_CHECK(block_tables.scalar_type() == at::kInt && context_lens.scalar_type() == at::kInt, "int32 tables expected");
  const int64_t num_seqs = q.size(0), num_heads = q.size(1), head_dim = q.size(2);
  const int64_t block_size = k_cache.size(1), num_kv_heads = k_cache.size(2);
  TORCH_CHECK(num_heads % num_kv_heads == 0 && k_cache.size(3) == head_dim, "head counts or head_dim do not match");
  const int64_t group = num_heads / num_kv_heads;
  auto tables = block_tables.contiguous();
  auto lens = context_lens.contiguous();
  auto out = at::empty_like(q);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, q.scalar_type(), "paged_attention_decode", [&] {
    const scalar_t* q_ptr = q.data_ptr<scalar_t>();
    const scalar_t* k_ptr = k_cache.data_ptr<scalar_t>();
    const scalar_t* v_ptr = v_cache.data_ptr<scalar_t>();
    scalar_t* out_ptr = out.data_ptr<scalar_t>();
    const int32_t* table_ptr = tables.data_ptr<int32_t>();
    const int32_t* len_ptr = lens.data_ptr<int32_t>();
    at::parallel_for(0, num_seqs * num_kv_heads, 1, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const int64_t s = i / num_kv_heads, h = i % num_kv_heads;
        const int64_t offset = s * num_heads * head_dim + h * group * head_dim;
        decode_one_group<scalar_t>(q_ptr + offset, k_ptr + h * head_dim, v_ptr + h * head_dim,
                                   table_ptr + s * tables.size(1), len_ptr[s], block_size, group, head_dim,
                                   num_kv_heads * head_dim, block_size * num_kv_heads * head_dim,
                                   static_cast<float>(scale), out_ptr + offset, head_dim);
      }
    });
  });
  return out;
}
