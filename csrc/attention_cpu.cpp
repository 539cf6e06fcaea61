// Paged decode attention on the CPU, split-K ("flash decoding"): every sequence's context is cut into chunks of
// kChunk tokens, the chunks run in parallel, each leaving a partial softmax (max, sum, unnormalised output) per
// query head, and a final pass merges them. A chunk reads each cache row once for all KV heads, and the query
// heads of a GQA group share it. Softmax and accumulation are in fp32; the cache may hold a narrower type than q
// (a bf16 cache halves the bytes read, and widening bf16 is a shift).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "ops.h"

namespace {

constexpr int64_t kChunk = 256;  // tokens per task: enough work to amortise a task, enough tasks for batch 1
constexpr int64_t kLanes = 16;  // independent partial sums, so the compiler vectorises without reassociating
constexpr int64_t kPrefetchDistance = 8;  // rows ahead

template <typename scalar_t>
inline float dot(const float* q, const scalar_t* k, int64_t n) {
  float lanes[kLanes] = {0.f};
  int64_t d = 0;
  for (; d + kLanes <= n; d += kLanes)
    for (int64_t j = 0; j < kLanes; ++j) lanes[j] += q[d + j] * static_cast<float>(k[d + j]);
  float sum = 0.f;
  for (int64_t j = 0; j < kLanes; ++j) sum += lanes[j];
  for (; d < n; ++d) sum += q[d] * static_cast<float>(k[d]);
  return sum;
}

template <typename scalar_t>
inline void axpy(float a, const scalar_t* x, float* y, int64_t n) {
  for (int64_t d = 0; d < n; ++d) y[d] += a * static_cast<float>(x[d]);
}

struct Shape {
  int64_t num_heads, num_kv_heads, head_dim, block_size, max_blocks;
  int64_t row_stride() const { return num_kv_heads * head_dim; }
  int64_t block_stride() const { return block_size * row_stride(); }
};

// Tokens [t0, t1) of one sequence for every query head: partial[h] = (max, sum, acc[head_dim]).
template <typename scalar_t>
void decode_chunk(const float* qf, const scalar_t* k_cache, const scalar_t* v_cache, const int32_t* block_table,
                  int64_t t0, int64_t t1, const Shape& s, float* partial) {
  const int64_t group = s.num_heads / s.num_kv_heads, n = t1 - t0, width = s.head_dim + 2;
  std::vector<float> scores(s.num_heads * n);
  auto row = [&](const scalar_t* cache, int64_t t) {
    return cache + block_table[t / s.block_size] * s.block_stride() + (t % s.block_size) * s.row_stride();
  };
  const int64_t row_bytes = s.row_stride() * sizeof(scalar_t);
  auto prefetch_row = [&](const scalar_t* cache, int64_t t) {  // blocks sit in random order: help the prefetcher
    if (t >= t1) return;
    const char* p = reinterpret_cast<const char*>(row(cache, t));
    for (int64_t b = 0; b < row_bytes; b += 64) __builtin_prefetch(p + b);
  };
  for (int64_t t = t0; t < t1; ++t) {
    prefetch_row(k_cache, t + kPrefetchDistance);
    const scalar_t* k = row(k_cache, t);
    for (int64_t h = 0; h < s.num_heads; ++h)
      scores[h * n + t - t0] = dot(qf + h * s.head_dim, k + (h / group) * s.head_dim, s.head_dim);
  }
  for (int64_t h = 0; h < s.num_heads; ++h) {
    float* sh = scores.data() + h * n;
    const float max_score = *std::max_element(sh, sh + n);
    float sum = 0.f;
    for (int64_t i = 0; i < n; ++i) sum += (sh[i] = std::exp(sh[i] - max_score));
    float* p = partial + h * width;
    p[0] = max_score;
    p[1] = sum;
    std::fill(p + 2, p + width, 0.f);
  }
  for (int64_t t = t0; t < t1; ++t) {
    prefetch_row(v_cache, t + kPrefetchDistance);
    const scalar_t* v = row(v_cache, t);
    for (int64_t h = 0; h < s.num_heads; ++h)
      axpy(scores[h * n + t - t0], v + (h / group) * s.head_dim, partial + h * width + 2, s.head_dim);
  }
}

// Merges the chunks of one sequence into out (num_heads, head_dim).
void merge_chunks(const float* partials, int64_t num_chunks, const Shape& s, float* out) {
  const int64_t width = s.head_dim + 2, stride = s.num_heads * width;
  for (int64_t h = 0; h < s.num_heads; ++h) {
    float max_score = partials[h * width];  // finite: every chunk holds a token (and -ffast-math assumes no inf)
    for (int64_t c = 1; c < num_chunks; ++c) max_score = std::max(max_score, partials[c * stride + h * width]);
    float sum = 0.f;
    std::vector<float> acc(s.head_dim, 0.f);
    for (int64_t c = 0; c < num_chunks; ++c) {
      const float* p = partials + c * stride + h * width;
      const float w = std::exp(p[0] - max_score);
      sum += w * p[1];
      axpy(w, p + 2, acc.data(), s.head_dim);
    }
    for (int64_t d = 0; d < s.head_dim; ++d) out[h * s.head_dim + d] = acc[d] / sum;
  }
}

}  // namespace

at::Tensor paged_attention_decode(const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& v_cache,
                                  const at::Tensor& block_tables, const at::Tensor& context_lens, double scale) {
  TORCH_CHECK(q.dim() == 3 && k_cache.dim() == 4, "q must be (seqs, heads, dim), caches (blocks, block_size, kv_heads, dim)");
  TORCH_CHECK(q.is_contiguous() && k_cache.is_contiguous() && v_cache.is_contiguous(), "inputs must be contiguous");
  TORCH_CHECK(k_cache.sizes() == v_cache.sizes() && v_cache.scalar_type() == k_cache.scalar_type(), "cache shape/dtype mismatch");
  TORCH_CHECK(block_tables.scalar_type() == at::kInt && context_lens.scalar_type() == at::kInt, "int32 tables expected");
  const Shape s{q.size(1), k_cache.size(2), q.size(2), k_cache.size(1), block_tables.size(1)};
  TORCH_CHECK(s.num_heads % s.num_kv_heads == 0 && k_cache.size(3) == s.head_dim, "head counts or head_dim do not match");
  const int64_t num_seqs = q.size(0);
  auto tables = block_tables.contiguous();
  auto lens = context_lens.contiguous();
  const int32_t* len_ptr = lens.data_ptr<int32_t>();
  std::vector<int64_t> first_chunk(num_seqs + 1, 0);  // chunks of sequence i: [first_chunk[i], first_chunk[i + 1])
  for (int64_t i = 0; i < num_seqs; ++i) {
    TORCH_CHECK(len_ptr[i] > 0 && len_ptr[i] <= s.max_blocks * s.block_size, "context length out of range");
    first_chunk[i + 1] = first_chunk[i] + (len_ptr[i] + kChunk - 1) / kChunk;
  }
  const int64_t num_chunks = first_chunk[num_seqs], partial_stride = s.num_heads * (s.head_dim + 2);
  std::vector<float> partials(num_chunks * partial_stride);
  const auto qf = (q.to(at::kFloat) * scale).contiguous();
  auto out = at::empty(q.sizes(), q.options().dtype(at::kFloat));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, k_cache.scalar_type(), "paged_attention_decode", [&] {
    const int32_t* table_ptr = tables.data_ptr<int32_t>();
    at::parallel_for(0, num_chunks, 1, [&](int64_t begin, int64_t end) {
      for (int64_t c = begin; c < end; ++c) {
        const int64_t seq = std::upper_bound(first_chunk.begin(), first_chunk.end(), c) - first_chunk.begin() - 1;
        const int64_t t0 = (c - first_chunk[seq]) * kChunk, t1 = std::min<int64_t>(t0 + kChunk, len_ptr[seq]);
        decode_chunk<scalar_t>(qf.data_ptr<float>() + seq * s.num_heads * s.head_dim, k_cache.data_ptr<scalar_t>(),
                               v_cache.data_ptr<scalar_t>(), table_ptr + seq * s.max_blocks, t0, t1, s,
                               partials.data() + c * partial_stride);
      }
    });
  });
  float* out_ptr = out.data_ptr<float>();
  at::parallel_for(0, num_seqs, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i)
      merge_chunks(partials.data() + first_chunk[i] * partial_stride, first_chunk[i + 1] - first_chunk[i], s,
                   out_ptr + i * s.num_heads * s.head_dim);
  });
  return out.to(q.scalar_type());
}
