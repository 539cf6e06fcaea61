// Paged decode attention on the CPU, split-K ("flash decoding"): every sequence's context is cut into chunks of
// kChunk tokens, the chunks run in parallel, each leaving a partial softmax (max, sum, unnormalised output) per
// query head, and a final pass merges them. A chunk is read in tiles of rows that every query head uses while they
// are in L1, with the next tile prefetched. With AVX-512 (head_dim 64 or 128) a head scores 16 rows at once and
// sums them in one transpose-and-add tree, with AVX2 + FMA 8 rows; other shapes take portable loops. Softmax and accumulation are in fp32;
// the cache may hold a narrower type than q (a bf16 cache halves the bytes read; widening bf16 is a shift).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

#include "ops.h"

namespace {

constexpr int64_t kChunk = 256;  // tokens per task: enough work to amortise a task, enough tasks for batch 1
constexpr int64_t kTile = 16;  // rows read together, in L1 while every query head uses them

struct Shape {
  int64_t num_heads, num_kv_heads, head_dim, block_size, max_blocks;
  int64_t group() const { return num_heads / num_kv_heads; }
  int64_t row_stride() const { return num_kv_heads * head_dim; }
  int64_t block_stride() const { return block_size * row_stride(); }
};

// Portable kernels: scores[i] = q . rows[i], and out += sum_i p[i] rows[i], for n rows of dim floats.
template <typename scalar_t>
void scores_generic(const float* q, const scalar_t* const* rows, int64_t offset, int64_t n, int64_t dim,
                    float* scores) {
  constexpr int64_t kLanes = 16;  // independent partial sums, so the compiler vectorises without reassociating
  for (int64_t i = 0; i < n; ++i) {
    const scalar_t* k = rows[i] + offset;
    float lanes[kLanes] = {0.f};
    int64_t d = 0;
    for (; d + kLanes <= dim; d += kLanes)
      for (int64_t j = 0; j < kLanes; ++j) lanes[j] += q[d + j] * static_cast<float>(k[d + j]);
    float sum = 0.f;
    for (int64_t j = 0; j < kLanes; ++j) sum += lanes[j];
    for (; d < dim; ++d) sum += q[d] * static_cast<float>(k[d]);
    scores[i] = sum;
  }
}

template <typename scalar_t>
void accumulate_generic(const float* p, const scalar_t* const* rows, int64_t offset, int64_t n, int64_t dim,
                        float* out) {
  for (int64_t i = 0; i < n; ++i)
    for (int64_t d = 0; d < dim; ++d) out[d] += p[i] * static_cast<float>(rows[i][offset + d]);
}

#if defined(__AVX512F__)
inline __m512 load16(const float* x) { return _mm512_loadu_ps(x); }
inline __m512 load16(const at::BFloat16* x) {  // bf16 is the top half of an fp32
  const __m256i bits = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(bits), 16));
}
inline __m512 load16(const at::Half* x) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x)));
}
inline __m512 load16(const double*) = delete;  // fp64 caches take the portable path

// r[i] = sum of the 16 lanes of v[i]: a transpose-and-add tree, 45 instructions for 16 sums.
inline __m512 reduce16(const __m512* v) {
  __m512 pairs[8], quads[4];
  for (int i = 0; i < 8; ++i)  // per 128-bit lane: [v2i, v2i+1, v2i, v2i+1] partials
    pairs[i] = _mm512_add_ps(_mm512_unpacklo_ps(v[2 * i], v[2 * i + 1]), _mm512_unpackhi_ps(v[2 * i], v[2 * i + 1]));
  for (int i = 0; i < 4; ++i) {  // per 128-bit lane: [v4i, v4i+1, v4i+2, v4i+3] partials
    const __m512d a = _mm512_castps_pd(pairs[2 * i]), b = _mm512_castps_pd(pairs[2 * i + 1]);
    quads[i] = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(a, b)), _mm512_castpd_ps(_mm512_unpackhi_pd(a, b)));
  }
  auto fold = [](__m512 a, __m512 b) {  // lanes [a0+a1, a2+a3, b0+b1, b2+b3]
    return _mm512_add_ps(_mm512_shuffle_f32x4(a, b, _MM_SHUFFLE(2, 0, 2, 0)),
                         _mm512_shuffle_f32x4(a, b, _MM_SHUFFLE(3, 1, 3, 1)));
  };
  return fold(fold(quads[0], quads[1]), fold(quads[2], quads[3]));
}

// kVecs = head_dim / 16: q and the running output live in registers.
template <int kVecs, typename scalar_t>
void scores_avx512(const float* q, const scalar_t* const* rows, int64_t offset, int64_t n, float* scores) {
  __m512 qv[kVecs];
  for (int j = 0; j < kVecs; ++j) qv[j] = _mm512_loadu_ps(q + 16 * j);
  for (int64_t i0 = 0; i0 < n; i0 += 16) {
    const int64_t m = std::min<int64_t>(16, n - i0);
    const scalar_t* tile[16];
    for (int64_t i = 0; i < 16; ++i) tile[i] = rows[i0 + std::min(i, m - 1)] + offset;  // a short tile repeats a row
    __m512 acc[16];
#pragma GCC unroll 16
    for (int i = 0; i < 16; ++i) acc[i] = _mm512_mul_ps(qv[0], load16(tile[i]));
#pragma GCC unroll 8
    for (int j = 1; j < kVecs; ++j)
#pragma GCC unroll 16
      for (int i = 0; i < 16; ++i) acc[i] = _mm512_fmadd_ps(qv[j], load16(tile[i] + 16 * j), acc[i]);
    _mm512_mask_storeu_ps(scores + i0, static_cast<__mmask16>((1u << m) - 1), reduce16(acc));
  }
}

template <int kVecs, typename scalar_t>
void accumulate_avx512(const float* p, const scalar_t* const* rows, int64_t offset, int64_t n, float* out) {
  __m512 acc[kVecs];
  for (int j = 0; j < kVecs; ++j) acc[j] = _mm512_loadu_ps(out + 16 * j);
  for (int64_t i = 0; i < n; ++i) {
    const __m512 w = _mm512_set1_ps(p[i]);
    for (int j = 0; j < kVecs; ++j) acc[j] = _mm512_fmadd_ps(w, load16(rows[i] + offset + 16 * j), acc[j]);
  }
  for (int j = 0; j < kVecs; ++j) _mm512_storeu_ps(out + 16 * j, acc[j]);
}
#endif

#if !defined(__AVX512F__) && defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#define GRUMEM_AVX2 1
inline __m256 load8(const float* x) { return _mm256_loadu_ps(x); }
inline __m256 load8(const at::BFloat16* x) {  // bf16 is the top half of an fp32
  const __m128i bits = _mm_loadu_si128(reinterpret_cast<const __m128i*>(x));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(bits), 16));
}
inline __m256 load8(const at::Half* x) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x))); }
inline __m256 load8(const double*) = delete;  // fp64 caches take the portable path

// r[i] = sum of the 8 lanes of v[i]: two rounds of pairwise adds within 128-bit halves, then the halves.
inline __m256 reduce8(const __m256* v) {
  const __m256 low = _mm256_hadd_ps(_mm256_hadd_ps(v[0], v[1]), _mm256_hadd_ps(v[2], v[3]));
  const __m256 high = _mm256_hadd_ps(_mm256_hadd_ps(v[4], v[5]), _mm256_hadd_ps(v[6], v[7]));
  return _mm256_add_ps(_mm256_permute2f128_ps(low, high, 0x20), _mm256_permute2f128_ps(low, high, 0x31));
}

// kVecs = head_dim / 8. Sixteen ymm registers: eight accumulators, and q is re-read from L1 per vector.
template <int kVecs, typename scalar_t>
void scores_avx2(const float* q, const scalar_t* const* rows, int64_t offset, int64_t n, float* scores) {
  for (int64_t i0 = 0; i0 < n; i0 += 8) {
    const int64_t m = std::min<int64_t>(8, n - i0);
    const scalar_t* tile[8];
    for (int64_t i = 0; i < 8; ++i) tile[i] = rows[i0 + std::min(i, m - 1)] + offset;  // a short tile repeats a row
    __m256 acc[8];
    const __m256 q0 = _mm256_loadu_ps(q);
#pragma GCC unroll 8
    for (int i = 0; i < 8; ++i) acc[i] = _mm256_mul_ps(q0, load8(tile[i]));
#pragma GCC unroll 16
    for (int j = 1; j < kVecs; ++j) {
      const __m256 qj = _mm256_loadu_ps(q + 8 * j);
#pragma GCC unroll 8
      for (int i = 0; i < 8; ++i) acc[i] = _mm256_fmadd_ps(qj, load8(tile[i] + 8 * j), acc[i]);
    }
    const __m256 sums = reduce8(acc);
    if (m == 8) {
      _mm256_storeu_ps(scores + i0, sums);
    } else {
      float all[8];
      _mm256_storeu_ps(all, sums);
      std::copy(all, all + m, scores + i0);
    }
  }
}

// The output is accumulated 64 dims (eight registers) at a time.
template <int kVecs, typename scalar_t>
void accumulate_avx2(const float* p, const scalar_t* const* rows, int64_t offset, int64_t n, float* out) {
  for (int j0 = 0; j0 < kVecs; j0 += 8) {
    __m256 acc[8];
    for (int j = 0; j < 8; ++j) acc[j] = _mm256_loadu_ps(out + 8 * (j0 + j));
    for (int64_t i = 0; i < n; ++i) {
      const __m256 w = _mm256_set1_ps(p[i]);
      const scalar_t* row = rows[i] + offset + 8 * j0;
#pragma GCC unroll 8
      for (int j = 0; j < 8; ++j) acc[j] = _mm256_fmadd_ps(w, load8(row + 8 * j), acc[j]);
    }
    for (int j = 0; j < 8; ++j) _mm256_storeu_ps(out + 8 * (j0 + j), acc[j]);
  }
}
#endif

// The vectorised kernels for the head sizes they are built for, the portable ones otherwise.
template <typename scalar_t>
class RowKernels {
 public:
  explicit RowKernels(int64_t head_dim) : dim_(head_dim) {
#if defined(__AVX512F__)
    if constexpr (!std::is_same_v<scalar_t, double>) {
      if (head_dim == 64) fast_scores_ = scores_avx512<4, scalar_t>, fast_accumulate_ = accumulate_avx512<4, scalar_t>;
      if (head_dim == 128) fast_scores_ = scores_avx512<8, scalar_t>, fast_accumulate_ = accumulate_avx512<8, scalar_t>;
    }
#elif defined(GRUMEM_AVX2)
    if constexpr (!std::is_same_v<scalar_t, double>) {
      if (head_dim == 64) fast_scores_ = scores_avx2<8, scalar_t>, fast_accumulate_ = accumulate_avx2<8, scalar_t>;
      if (head_dim == 128) fast_scores_ = scores_avx2<16, scalar_t>, fast_accumulate_ = accumulate_avx2<16, scalar_t>;
    }
#endif
  }
  void scores(const float* q, const scalar_t* const* rows, int64_t offset, int64_t n, float* out) const {
    fast_scores_ ? fast_scores_(q, rows, offset, n, out) : scores_generic(q, rows, offset, n, dim_, out);
  }
  void accumulate(const float* p, const scalar_t* const* rows, int64_t offset, int64_t n, float* out) const {
    fast_accumulate_ ? fast_accumulate_(p, rows, offset, n, out) : accumulate_generic(p, rows, offset, n, dim_, out);
  }

 private:
  using Kernel = void (*)(const float*, const scalar_t* const*, int64_t, int64_t, float*);
  int64_t dim_;
  Kernel fast_scores_ = nullptr, fast_accumulate_ = nullptr;
};

// Tokens [t0, t1) of one sequence for every query head: partial[h] = (max, sum, acc[head_dim]).
template <typename scalar_t>
void decode_chunk(const float* qf, const scalar_t* k_cache, const scalar_t* v_cache, const int32_t* block_table,
                  int64_t t0, int64_t t1, const Shape& s, const RowKernels<scalar_t>& kernels, float* partial) {
  const int64_t n = t1 - t0, dim = s.head_dim, width = dim + 2, row_bytes = s.row_stride() * sizeof(scalar_t);
  std::vector<const scalar_t*> k_rows(n), v_rows(n);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t t = t0 + i, at = block_table[t / s.block_size] * s.block_stride() + (t % s.block_size) * s.row_stride();
    k_rows[i] = k_cache + at;
    v_rows[i] = v_cache + at;
  }
  // Calls per_head(h, kv_offset, i0, m) for every query head on each tile of m rows from i0, prefetching the next
  // tile: blocks sit in random order and the hardware prefetcher stops at page boundaries.
  auto for_each_tile = [&](const std::vector<const scalar_t*>& rows, auto&& per_head) {
    for (int64_t i0 = 0; i0 < n; i0 += kTile)
      for (int64_t h = 0; h < s.num_heads; ++h) {  // each head prefetches a share of the next tile's rows
        for (int64_t i = i0 + kTile + h; i < std::min(n, i0 + 2 * kTile); i += s.num_heads)
          for (int64_t b = 0; b < row_bytes; b += 64) __builtin_prefetch(reinterpret_cast<const char*>(rows[i]) + b);
        per_head(h, h / s.group() * dim, i0, std::min(kTile, n - i0));
      }
  };
  std::vector<float> scores(s.num_heads * n);
  for_each_tile(k_rows, [&](int64_t h, int64_t offset, int64_t i0, int64_t m) {
    kernels.scores(qf + h * dim, k_rows.data() + i0, offset, m, scores.data() + h * n + i0);
  });
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
  for_each_tile(v_rows, [&](int64_t h, int64_t offset, int64_t i0, int64_t m) {
    kernels.accumulate(scores.data() + h * n + i0, v_rows.data() + i0, offset, m, partial + h * width + 2);
  });
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
      for (int64_t d = 0; d < s.head_dim; ++d) acc[d] += w * p[2 + d];
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
    const RowKernels<scalar_t> kernels(s.head_dim);
    at::parallel_for(0, num_chunks, 1, [&](int64_t begin, int64_t end) {
      for (int64_t c = begin; c < end; ++c) {
        const int64_t seq = std::upper_bound(first_chunk.begin(), first_chunk.end(), c) - first_chunk.begin() - 1;
        const int64_t t0 = (c - first_chunk[seq]) * kChunk, t1 = std::min<int64_t>(t0 + kChunk, len_ptr[seq]);
        decode_chunk<scalar_t>(qf.data_ptr<float>() + seq * s.num_heads * s.head_dim, k_cache.data_ptr<scalar_t>(),
                               v_cache.data_ptr<scalar_t>(), table_ptr + seq * s.max_blocks, t0, t1, s, kernels,
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
