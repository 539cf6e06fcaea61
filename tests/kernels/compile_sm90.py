"""Compiles every Triton kernel for Hopper (sm_90) without a GPU and prints each one's resource use as JSON.

The interpreter replaces the compiler, so this runs without TRITON_INTERPRET, in a subprocess of
test_triton_sm90.py. Shapes: SmolLM2 in fp32 and Qwen2.5-3B in bf16, with the constexprs the launchers choose.
"""
import json
import os
import re
import subprocess
import sys
import tempfile

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from grumem.kernels.paged_attention import _merge_splits_kernel, _paged_attention_decode_kernel, decode_meta
from grumem.kernels.prefill_attention import _prefill_attention_kernel, prefill_meta
from grumem.kernels.store_kvcache import _store_kvcache_kernel, store_meta

SHAPES = {"smollm2-fp32": (9, 3, 64, torch.float32), "qwen2.5-3b-bf16": (16, 2, 128, torch.bfloat16)}
INDEX_POINTERS = {"block_tables_ptr": "*i32", "context_lens_ptr": "*i32", "cu_seqlens_q_ptr": "*i32",
                  "cu_seqlens_k_ptr": "*i32", "slot_mapping_ptr": "*i64", "partial_ptr": "*fp32", "lse_ptr": "*fp32"}
CUOBJDUMP = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")


def compile_sm90(kernel, data_type: str, constexprs: dict) -> dict:
    signature = {}
    for name in kernel.arg_names:
        if name in constexprs:
            signature[name] = "constexpr"
        elif name.endswith("_ptr"):
            signature[name] = INDEX_POINTERS.get(name, data_type)
        else:
            signature[name] = "fp32" if name == "scale" else "i32"
    source = ASTSource(fn=kernel, signature=signature,
                       constexprs={(kernel.arg_names.index(k),): v for k, v in constexprs.items()})
    compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32))
    return {"shared_bytes": compiled.metadata.shared, **resource_usage(compiled.asm["cubin"])}


def resource_usage(cubin: bytes) -> dict:
    """Registers and local memory (spills) per thread, from cuobjdump; empty when it is not shipped."""
    if not os.path.exists(CUOBJDUMP):
        return {}
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        text = subprocess.run([CUOBJDUMP, "-res-usage", f.name], capture_output=True, text=True, check=True).stdout
    return {"registers": int(re.search(r"REG:(\d+)", text).group(1)),
            "local_bytes": int(re.search(r"LOCAL:(\d+)", text).group(1))}


def main() -> None:
    report = {}
    for shape, (num_heads, num_kv_heads, head_dim, dtype) in SHAPES.items():
        data = {torch.float32: "*fp32", torch.bfloat16: "*bf16"}[dtype]
        decode = decode_meta(num_heads, num_kv_heads, head_dim, 16, 8192, dtype)
        kernels = {
            "store_kvcache": (_store_kvcache_kernel, store_meta(num_kv_heads, head_dim)),
            "paged_attention_decode": (_paged_attention_decode_kernel, decode),
            "merge_splits": (_merge_splits_kernel, {k: decode[k] for k in ("HEAD_DIM", "NUM_SPLITS", "BLOCK_D")}),
            "prefill_attention": (_prefill_attention_kernel,
                                  prefill_meta(num_heads, num_kv_heads, head_dim, 16, True, dtype)),
        }
        for name, (kernel, constexprs) in kernels.items():
            report[f"{name}/{shape}"] = compile_sm90(kernel, data, constexprs)
    json.dump(report, sys.stdout, indent=1)


if __name__ == "__main__":
    main()
