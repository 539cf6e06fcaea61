// Schemas and CPU implementations of torch.ops.grumem.*; Python wrappers live in grumem/kernels/cpp_ops.py.
#include <Python.h>
#include <torch/library.h>

#include "ops.h"

TORCH_LIBRARY(grumem, m) {
  // Decode attention over the paged KV cache (one query token per sequence).
  m.def("paged_attention_decode(Tensor q, Tensor k_cache, Tensor v_cache, Tensor block_tables, Tensor context_lens, float scale) -> Tensor");
  // SwiGLU on the packed gate_up projection: silu(x[:, :d]) * x[:, d:].
  m.def("silu_and_mul(Tensor x) -> Tensor");
}

TORCH_LIBRARY_IMPL(grumem, CPU, m) {
  m.impl("paged_attention_decode", &paged_attention_decode);
  m.impl("silu_and_mul", &silu_and_mul);
}

// Importing grumem._C registers the ops above.
PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module);
}
