// CPU ops of grumem, registered as torch.ops.grumem.* (schemas in torch_bindings.cpp).
#pragma once

#include <ATen/ATen.h>

#include <tuple>

// Decode attention over a paged KV cache: one query token per sequence.
// q (num_seqs, num_heads, head_dim); k/v_cache (num_blocks, block_size, num_kv_heads, head_dim);
// block_tables (num_seqs, max_blocks) int32; context_lens (num_seqs,) int32 -> (num_seqs, num_heads, head_dim).
// The caches may have another floating dtype than q (e.g. bf16 under an fp32 model); the output has q's.
at::Tensor paged_attention_decode(const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& v_cache,
                                  const at::Tensor& block_tables, const at::Tensor& context_lens, double scale);

// SwiGLU: x (tokens, 2 * d) = [gate | up] -> silu(gate) * up, (tokens, d), in x's dtype (fp32, fp64 or bf16).
at::Tensor silu_and_mul(const at::Tensor& x);

// (w * (r / rms(r)), r) with r = x + residual (r = x without one); x (rows, d), weight (d,); fp32 variance.
std::tuple<at::Tensor, at::Tensor> fused_add_rms_norm(const at::Tensor& x, const c10::optional<at::Tensor>& residual,
                                                      const at::Tensor& weight, double eps);

// Neox rotary embedding of q (tokens, heads, head_dim) and k (tokens, kv_heads, head_dim) at int64 positions, from
// an fp32 (max_position, head_dim) [cos | sin] cache -> (q', k').
std::tuple<at::Tensor, at::Tensor> rotary_embedding(const at::Tensor& positions, const at::Tensor& q,
                                                    const at::Tensor& k, const at::Tensor& cos_sin_cache);

// key/value (tokens, kv_heads, head_dim) into k/v_cache (blocks, block_size, kv_heads, head_dim) at int64 slots
// (-1: skip), in the caches' dtype.
void store_kvcache(const at::Tensor& key, const at::Tensor& value, at::Tensor& k_cache, at::Tensor& v_cache,
                   const at::Tensor& slot_mapping);
