"""ModelRunner: owns the model and the paged KV cache, turns a scheduled batch into one forward pass.

Prefill rows carry the new tokens of each sequence (after its cached prefix); decode rows carry one token each.
Logits are computed only where a token will be sampled (the last position of a completed prefill, every decode row).
"""
import torch

from grumem.engine.config import Config
from grumem.engine.context import get_context, reset_context, set_context
from grumem.engine.cuda_graphs import DecodeGraphs
from grumem.engine.layers.attention import Attention, get_backend
from grumem.engine.layers.prepacked import prepack_linears
from grumem.engine.loader import load_named_tensors
from grumem.engine.models.registry import load_model
from grumem.engine.scheduler import ScheduledBatch
from grumem.kernels import cpp_ops


class ModelRunner:
    def __init__(self, config: Config):
        self.config = config
        self.device = torch.device(config.device)
        self.model = load_model(config.model, config.dtype, config.device, config.seed, config.adapter)
        prepack_linears(self.model)
        self.block_size = config.kvcache_block_size
        model_dtype = self.model.lm_head.weight.dtype
        self.kv_cache_dtype = getattr(torch, config.kv_cache_dtype) if config.kv_cache_dtype else model_dtype
        hf_config = self.model.config
        self.max_model_len = min(config.max_model_len or hf_config.max_position_embeddings,
                                 hf_config.max_position_embeddings)
        self.attention_layers = [m for m in self.model.modules() if isinstance(m, Attention)]
        backend_name = self._backend_name()
        backend = get_backend(backend_name)
        for layer in self.attention_layers:
            layer.backend = backend
        self.kv_cache = self._allocate_kv_cache()
        self.decode_graphs = None
        if self.device.type == "cuda" and backend_name == "triton" and not config.enforce_eager:
            max_blocks_per_seq = -(-self.max_model_len // self.block_size)
            self.decode_graphs = DecodeGraphs(self.model, config.max_num_seqs, max_blocks_per_seq,
                                              hf_config.hidden_size, model_dtype, self.device)

    def update_weights(self, named_tensors) -> None:
        load_named_tensors(self.model, named_tensors)
        prepack_linears(self.model)

    def _backend_name(self) -> str:
        name = self.config.attention_backend
        if name != "auto":
            return name
        if self.device.type == "cuda":
            return "triton"
        return "cpu" if self.device.type == "cpu" and cpp_ops.AVAILABLE else "torch"

    @property
    def num_blocks(self) -> int:
        return self.kv_cache.shape[2]

    def _bytes_per_block(self) -> int:
        layer = self.attention_layers[0]
        itemsize = torch.empty((), dtype=self.kv_cache_dtype).element_size()
        return 2 * len(self.attention_layers) * self.block_size * layer.num_kv_heads * layer.head_dim * itemsize

    def _allocate_kv_cache(self) -> torch.Tensor:
        num_blocks = self.config.num_kvcache_blocks
        if num_blocks is None:
            if self.device.type == "cuda":
                free, _ = torch.cuda.mem_get_info(self.device)
                budget = free * self.config.gpu_memory_utilization - self._activation_bytes()
            else:
                budget = self.config.kv_cache_memory_gb * 2**30
            num_blocks = int(budget // self._bytes_per_block())
        if num_blocks < 1:
            raise ValueError("no memory left for the KV cache: lower max_num_batched_tokens or use a smaller model")
        layer = self.attention_layers[0]
        # (k/v, layers, num_blocks, block_size, num_kv_heads, head_dim); each layer gets views into it. A slot is
        # always written before it is read, so on the CPU the cache is left unfilled: zeroing 4 GB page by page
        # took 6 s of the engine's start, and the pages now fault in as blocks are first used.
        shape = (2, len(self.attention_layers), num_blocks, self.block_size, layer.num_kv_heads, layer.head_dim)
        allocate = torch.empty if self.device.type == "cpu" else torch.zeros
        kv_cache = allocate(shape, dtype=self.kv_cache_dtype, device=self.device)
        for i, layer in enumerate(self.attention_layers):
            layer.k_cache, layer.v_cache = kv_cache[0, i], kv_cache[1, i]
        return kv_cache

    def _activation_bytes(self) -> int:
        """A generous bound on a prefill step's activations: logits-free hidden states and MLP intermediates."""
        config = self.model.config
        width = max(config.intermediate_size * 2, config.hidden_size * 4)
        itemsize = self.model.lm_head.weight.element_size()
        return 4 * self.config.max_num_batched_tokens * width * itemsize

    def copy_blocks(self, pairs: list[tuple[int, int]]) -> None:
        """Copy-on-write for forked sequences: the KV of block src into block dst, in every layer."""
        if pairs:
            src, dst = (torch.tensor(x, device=self.device) for x in zip(*pairs))
            self.kv_cache[:, :, dst] = self.kv_cache[:, :, src]

    @torch.inference_mode()
    def run(
        self, batch: ScheduledBatch, sample_rows: list[int], prompt_rows: list[int] = (),
        prompt_targets: list[int] = (),
    ) -> tuple[torch.Tensor, list[float]]:
        """Runs one step; returns fp32 logits (len(sample_rows), vocab) for the listed batch rows, and the logprob
        of prompt_targets[i] after the token at flat position prompt_rows[i] of this step (prompt logprobs)."""
        if batch.is_prefill:
            input_ids, positions, logits_index = self._prepare_prefill(batch)
            logits_index = logits_index[sample_rows]
        else:
            input_ids, positions = self._prepare_decode(batch)
            logits_index = torch.tensor(sample_rows, device=self.device)
        try:
            if batch.is_prefill or self.decode_graphs is None:
                hidden_states = self.model(input_ids, positions)
            else:
                hidden_states = self.decode_graphs.replay(input_ids, positions, get_context())
            logits = self.model.compute_logits(hidden_states[logits_index]).float()
            return logits, self._prompt_logprobs(hidden_states, prompt_rows, prompt_targets)
        finally:
            reset_context()

    def _prompt_logprobs(self, hidden_states: torch.Tensor, rows: list[int], targets: list[int]) -> list[float]:
        if not rows:
            return []
        logits = self.model.compute_logits(hidden_states[torch.tensor(rows, device=self.device)]).float()
        targets = torch.tensor(targets, device=self.device).unsqueeze(1)
        return logits.log_softmax(dim=-1).gather(1, targets).squeeze(1).tolist()

    def _slots(self, block_table: list[int], start: int, end: int) -> list[int]:
        return [block_table[p // self.block_size] * self.block_size + p % self.block_size for p in range(start, end)]

    def _block_tables(self, batch: ScheduledBatch) -> torch.Tensor:
        width = max(len(seq.block_table) for seq in batch.seqs)
        rows = [seq.block_table + [-1] * (width - len(seq.block_table)) for seq in batch.seqs]
        return torch.tensor(rows, dtype=torch.int32, device=self.device)

    def _prepare_prefill(self, batch: ScheduledBatch):
        input_ids, positions, slots, cu_q, cu_k, last = [], [], [], [0], [0], []
        for seq, num_new in zip(batch.seqs, batch.num_new_tokens):
            start, end = seq.num_computed_tokens, seq.num_computed_tokens + num_new
            input_ids += seq.token_ids[start:end]
            positions += range(start, end)
            slots += self._slots(seq.block_table, start, end)
            cu_q.append(cu_q[-1] + num_new)
            cu_k.append(cu_k[-1] + end)
            last.append(cu_q[-1] - 1)
        as_tensor = lambda x, dtype: torch.tensor(x, dtype=dtype, device=self.device)  # noqa: E731
        set_context(
            is_prefill=True,
            cu_seqlens_q=as_tensor(cu_q, torch.int32),
            cu_seqlens_k=as_tensor(cu_k, torch.int32),
            max_seqlen_q=max(batch.num_new_tokens),
            max_seqlen_k=max(b - a for a, b in zip(cu_k, cu_k[1:])),
            slot_mapping=as_tensor(slots, torch.int64),
            block_tables=self._block_tables(batch) if cu_k != cu_q else None,  # None: no cached prefix to read
        )
        return as_tensor(input_ids, torch.int64), as_tensor(positions, torch.int64), as_tensor(last, torch.int64)

    def _prepare_decode(self, batch: ScheduledBatch):
        input_ids = [seq.token_ids[-1] for seq in batch.seqs]
        positions = [len(seq) - 1 for seq in batch.seqs]
        slots = [self._slots(seq.block_table, len(seq) - 1, len(seq))[0] for seq in batch.seqs]
        set_context(
            is_prefill=False,
            slot_mapping=torch.tensor(slots, dtype=torch.int64, device=self.device),
            context_lens=torch.tensor([len(seq) for seq in batch.seqs], dtype=torch.int32, device=self.device),
            block_tables=self._block_tables(batch),
        )
        ids = torch.tensor(input_ids, dtype=torch.int64, device=self.device)
        return ids, torch.tensor(positions, dtype=torch.int64, device=self.device)
