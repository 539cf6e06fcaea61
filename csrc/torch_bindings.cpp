// Schemas and CPU implementations of torch.ops.grumem.*; Python wrappers live in grumem/kernels/cpp_ops.py.
#include <Python.h>
#include <torch/library.h>

#include "ops.h"

TORCH_LIBRARY(grumem, m) {
  // Decode attention over the paged KV cache (one query token per sequence).
  m.def("paged_attention_decode(Tensor q, Tensor k_cache, Tensor v_cache, Tensor block_tables, Tensor context_lens, float scale) -> Tensor");
  // SwiGLU on the packed gate_up projection: silu(x[:, :d]) * x[:, d:].
  m.def("silu_and_mul(Tensor x) -> Tensor");
  // RMSNorm after the residual add: (norm(x + residual), x + residual).
  m.def("fused_add_rms_norm(Tensor x, Tensor? residual, Tensor weight, float eps) -> (Tensor, Tensor)");
  // Neox rotary embedding of q and k at the given positions.
  m.def("rotary_embedding(Tensor positions, Tensor q, Tensor k, Tensor cos_sin_cache) -> (Tensor, Tensor)");
  // New keys and values into their paged-cache slots.
  m.def("store_kvcache(Tensor key, Tensor value, Tensor(a!) k_cache, Tensor(b!) v_cache, Tensor slot_mapping) -> ()");
}

TORCH_LIBRARY_IMPL(grumem, CPU, m) {
  m.impl("paged_attention_decode", &paged_attention_decode);
  m.impl("silu_and_mul", &silu_and_mul);
  m.impl("fused_add_rms_norm", &fused_add_rms_norm);
  m.impl("rotary_embedding", &rotary_embedding);
  m.impl("store_kvcache", &store_kvcache);
}

// Importing grumem._C registers the ops above.
PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module);
}
