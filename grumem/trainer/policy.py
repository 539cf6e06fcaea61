"""The trained weights: a Hugging Face transformers causal LM, and the per-token logprobs the loss needs.

Rows that start with the same prompt tokens (the G rollouts of a question read the same section at the same chunk)
can be passed with `shared`: that prefix is computed once, with gradients, and each row's remainder runs on its keys
and values. Under causal attention the prefix never sees what follows it, so this is exact.
The engine serves its own copy of the weights; `named_tensors()` hands them over under the checkpoint's names
(`LLM.update_weights` packs them as at load time).
"""
import inspect

import torch
from transformers import AutoModelForCausalLM, DynamicCache

from grumem.trainer.rows import TrainingRow


class Policy:
    def __init__(self, checkpoint: str, device: str = "cpu", autocast: torch.dtype | None = None):
        """Weights in fp32; `autocast` (e.g. torch.bfloat16) runs the forward and backward passes in that dtype."""
        self.model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32).to(device)
        self.model.config.use_cache = False
        self.device, self.autocast = torch.device(device), autocast
        decoder_args = inspect.signature(self.model.get_decoder().forward).parameters
        self._cache_arg = "cache" if "cache" in decoder_args else "past_key_values"  # renamed in transformers 5.2x

    def named_tensors(self):
        return ((name, param.detach()) for name, param in self.model.named_parameters())

    def save(self, folder: str, tokenizer=None) -> None:
        self.model.save_pretrained(folder)
        if tokenizer is not None:
            tokenizer.save_pretrained(folder)

    def token_logprobs(self, rows: list[TrainingRow], temperature: float, mask_table: torch.Tensor | None = None,
                       shared: int = 0) -> torch.Tensor:
        """log pi of every loss token of `rows` (forced tokens have none), concatenated row after row: logits /
        temperature, log-softmax over the tokens the constraint allowed there (as the engine's sampler did).
        `shared`: the rows' first `shared` prompt tokens are identical (at most the shortest prompt minus one)."""
        assert shared == 0 or all(len(r.prompt_ids) > shared for r in rows)
        positions, targets, mask_rows = [], [], []  # per row: the positions whose logits predict its loss tokens
        for row in rows:
            positions.append([len(row.prompt_ids) - 1 + j - shared for j in row.loss_positions])
            targets += [row.output_ids[j] for j in row.loss_positions]
            mask_rows += [row.mask_rows[j] if row.mask_rows is not None else -1 for j in row.loss_positions]
        with torch.autocast(self.device.type, dtype=self.autocast, enabled=self.autocast is not None):
            hidden = self._after_prefix(rows, shared, positions) if shared else self._padded(rows, positions)
            logits = self.model.get_output_embeddings()(hidden).float()
        mask_rows = torch.tensor(mask_rows, device=self.device)
        if mask_table is not None and bool((mask_rows >= 0).any()):
            allowed = mask_table.to(self.device)[mask_rows.clamp(min=0)] | (mask_rows < 0).unsqueeze(1)
            logits = logits.masked_fill(~allowed, float("-inf"))
        logits = logits / temperature
        targets = torch.tensor(targets, device=self.device).unsqueeze(1)
        return logits.gather(1, targets).squeeze(1) - logits.logsumexp(dim=-1)

    def _padded(self, rows: list[TrainingRow], positions: list[list[int]]) -> torch.Tensor:
        """The last hidden states at `positions` of right-padded rows; no attention mask is needed (causal attention
        never lets a token see the padding after it)."""
        input_ids = torch.zeros(len(rows), max(row.num_tokens for row in rows), dtype=torch.long)
        for i, row in enumerate(rows):
            input_ids[i, : row.num_tokens] = torch.tensor(row.prompt_ids + row.output_ids)
        hidden = self.model.get_decoder()(input_ids=input_ids.to(self.device)).last_hidden_state
        rows_index = torch.tensor([i for i, row_positions in enumerate(positions) for _ in row_positions])
        positions_index = torch.tensor([p for row_positions in positions for p in row_positions])
        return hidden[rows_index.to(self.device), positions_index.to(self.device)]

    def _after_prefix(self, rows: list[TrainingRow], shared: int, positions: list[list[int]]) -> torch.Tensor:
        """The prefix once, then each row's remainder on its keys and values, one row at a time (no padding)."""
        decoder, cache = self.model.get_decoder(), DynamicCache(config=self.model.config)
        prefix = torch.tensor([rows[0].prompt_ids[:shared]], device=self.device)
        decoder(input_ids=prefix, use_cache=True, **{self._cache_arg: cache})
        prefix_kv = [(layer.keys, layer.values) for layer in cache.layers]
        selected = []
        for row, row_positions in zip(rows, positions):
            rest = torch.tensor([(row.prompt_ids + row.output_ids)[shared:]], device=self.device)
            at = torch.arange(shared, row.num_tokens, device=self.device).unsqueeze(0)
            hidden = decoder(input_ids=rest, position_ids=at, use_cache=True, **{self._cache_arg: cache})
            selected.append(hidden.last_hidden_state[0, row_positions])
            for layer, (keys, values) in zip(cache.layers, prefix_kv):  # back to the prefix alone
                layer.keys, layer.values = keys, values
        return torch.cat(selected)
