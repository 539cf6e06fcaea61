"""CUDA graphs for decode: one graph per batch-size bucket, replayed with each step's inputs copied into static buffers.

A decode step launches a dozen small kernels per layer; at small batch the GPU waits on those launches. Every kernel
of a decode step takes its sizes from the batch and from the block-table width (fixed here to max_model_len's), and
reads context lengths, slots and block tables from tensors, so one capture serves every step of its batch size.
A batch runs in the smallest bucket that holds it; the padding rows write no cache slot (-1) and attend to one cached
token of block 0, so they stay finite and touch nothing.
"""
import torch
from torch import nn

from grumem.engine.context import Context, reset_context, set_context


def batch_buckets(max_num_seqs: int) -> list[int]:
    """1, 2, 4, 8, then multiples of 16, up to and including max_num_seqs."""
    return sorted({b for b in (1, 2, 4, 8) if b < max_num_seqs} | set(range(16, max_num_seqs, 16)) | {max_num_seqs})


class DecodeGraphs:
    @torch.inference_mode()
    def __init__(self, model: nn.Module, max_num_seqs: int, max_blocks_per_seq: int, hidden_size: int,
                 dtype: torch.dtype, device: torch.device):
        self.buckets = batch_buckets(max_num_seqs)
        n = self.buckets[-1]
        self.input_ids = torch.zeros(n, dtype=torch.int64, device=device)
        self.positions = torch.zeros(n, dtype=torch.int64, device=device)
        self.slot_mapping = torch.full((n,), -1, dtype=torch.int64, device=device)
        self.context_lens = torch.ones(n, dtype=torch.int32, device=device)
        self.block_tables = torch.zeros(n, max_blocks_per_seq, dtype=torch.int32, device=device)
        self.hidden_states = torch.zeros(n, hidden_size, dtype=dtype, device=device)
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        pool = None
        for batch in reversed(self.buckets):  # largest first: the smaller graphs reuse its memory pool
            graph = torch.cuda.CUDAGraph()
            self._set_context(batch)
            try:
                self.hidden_states[:batch] = model(self.input_ids[:batch], self.positions[:batch])  # warm-up
                with torch.cuda.graph(graph, pool):
                    self.hidden_states[:batch] = model(self.input_ids[:batch], self.positions[:batch])
            finally:
                reset_context()
            pool = graph.pool()
            self.graphs[batch] = graph
        torch.cuda.synchronize()

    def _set_context(self, batch: int) -> None:
        set_context(is_prefill=False, slot_mapping=self.slot_mapping[:batch], context_lens=self.context_lens[:batch],
                    block_tables=self.block_tables[:batch])

    def replay(self, input_ids: torch.Tensor, positions: torch.Tensor, ctx: Context) -> torch.Tensor:
        """hidden states (batch, hidden) of a decode step whose context the runner has set."""
        batch, width = len(input_ids), ctx.block_tables.shape[1]
        bucket = next(b for b in self.buckets if b >= batch)
        self.input_ids[:batch] = input_ids
        self.positions[:batch] = positions
        self.slot_mapping[batch:bucket] = -1
        self.slot_mapping[:batch] = ctx.slot_mapping
        self.context_lens[batch:bucket] = 1
        self.context_lens[:batch] = ctx.context_lens
        self.block_tables[batch:bucket] = 0
        self.block_tables[:batch, :width] = ctx.block_tables  # entries past a row's context are never read
        self.graphs[bucket].replay()
        return self.hidden_states[:batch]
