// Writes a step's new keys and values into their paged-cache slots (slot -1: skip), rounding into the cache's
// dtype. Torch's masked index_put costs about 140 us per layer at decode's few rows; this is a row copy.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <cstring>
#include <type_traits>

#include "ops.h"

namespace {

template <typename src_t, typename dst_t>
void store_rows(const src_t* src, dst_t* dst, const int64_t* slots, int64_t tokens, int64_t row) {
  at::parallel_for(0, tokens, 256, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      if (slots[t] < 0) continue;
      if constexpr (std::is_same_v<src_t, dst_t>) {
        std::memcpy(dst + slots[t] * row, src + t * row, row * sizeof(src_t));
      } else {
        for (int64_t j = 0; j < row; ++j)
          dst[slots[t] * row + j] = static_cast<dst_t>(static_cast<float>(src[t * row + j]));
      }
    }
  });
}

}  // namespace

void store_kvcache(const at::Tensor& key, const at::Tensor& value, at::Tensor& k_cache, at::Tensor& v_cache,
                   const at::Tensor& slot_mapping) {
  TORCH_CHECK(key.dim() == 3 && key.sizes() == value.sizes() && k_cache.dim() == 4 &&
                  k_cache.sizes() == v_cache.sizes(),
              "key/value (tokens, kv_heads, head_dim) and caches (blocks, block_size, kv_heads, head_dim) expected");
  TORCH_CHECK(key.size(1) == k_cache.size(2) && key.size(2) == k_cache.size(3), "key and cache rows differ in shape");
  TORCH_CHECK(k_cache.is_contiguous() && v_cache.is_contiguous(), "caches must be contiguous");
  TORCH_CHECK(slot_mapping.scalar_type() == at::kLong && slot_mapping.numel() == key.size(0),
              "one int64 slot per token");
  const int64_t tokens = key.size(0), row = key.size(1) * key.size(2), num_slots = k_cache.size(0) * k_cache.size(1);
  const auto slots = slot_mapping.contiguous(), k = key.contiguous(), v = value.contiguous();
  const int64_t* sp = slots.data_ptr<int64_t>();
  for (int64_t t = 0; t < tokens; ++t) TORCH_CHECK(sp[t] < num_slots, "slot out of range");
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, key.scalar_type(), "store_kvcache_src", [&] {
    using src_t = scalar_t;
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, k_cache.scalar_type(), "store_kvcache_dst", [&] {
      store_rows(k.data_ptr<src_t>(), k_cache.data_ptr<scalar_t>(), sp, tokens, row);
      store_rows(v.data_ptr<src_t>(), v_cache.data_ptr<scalar_t>(), sp, tokens, row);
    });
  });
}
