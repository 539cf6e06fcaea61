// CPU ops of grumem, registered as torch.ops.grumem.* (schemas in torch_bindings.cpp).
#pragma once

#include <ATen/ATen.h>

// Decode attention over a paged KV cache: one query token per sequence.
// q (num_seqs, num_heads, head_dim); k/v_cache (num_blocks, block_size, num_kv_heads, head_dim);
// block_tables (num_seqs, max_blocks) int32; context_lens (num_seqs,) int32 -> (num_seqs, num_heads, head_dim).
// The caches may have another floating dtype than q (e.g. bf16 under an fp32 model); the output has q's.
at::Tensor paged_attention_decode(const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& v_cache,
                                  const at::Tensor& block_tables, const at::Tensor& context_lens, double scale);

// SwiGLU: x (tokens, 2 * d) = [gate | up] -> silu(gate) * up, (tokens, d), in x's dtype (fp32, fp64 or bf16).
at::Tensor silu_and_mul(const at::Tensor& x);
