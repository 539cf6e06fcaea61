"""Paged-cache fixtures: random caches behind shuffled (non-contiguous) block tables."""
import torch


def make_paged_kv(seq_lens: list[int], num_kv_heads: int, head_dim: int, block_size: int, dtype=torch.float32):
    """Returns (k_cache, v_cache, block_tables, dense_k, dense_v) with dense_*[i] = (len_i, kv_heads, head_dim)."""
    blocks_per_seq = [(n + block_size - 1) // block_size for n in seq_lens]
    num_blocks = sum(blocks_per_seq) + 3  # spare blocks hold garbage that must never be read
    k_cache = torch.randn(num_blocks, block_size, num_kv_heads, head_dim).to(dtype)
    v_cache = torch.randn(num_blocks, block_size, num_kv_heads, head_dim).to(dtype)
    pool = torch.randperm(num_blocks).tolist()
    block_tables = torch.full((len(seq_lens), max(blocks_per_seq)), -1, dtype=torch.int32)
    dense_k, dense_v = [], []
    for i, (n, nb) in enumerate(zip(seq_lens, blocks_per_seq)):
        table = [pool.pop() for _ in range(nb)]
        block_tables[i, :nb] = torch.tensor(table, dtype=torch.int32)
        dense_k.append(k_cache[table].flatten(0, 1)[:n])
        dense_v.append(v_cache[table].flatten(0, 1)[:n])
    return k_cache, v_cache, block_tables, dense_k, dense_v
