"""The trained weights: a Hugging Face transformers causal LM, and the per-token logprobs the loss needs.

Rows that start with the same prompt tokens (the G rollouts of a question read the same section at the same chunk)
can be passed with `shared`: that prefix is computed once, with gradients, and its keys and values are repeated for
every row. Under causal attention the prefix never sees what follows it, so this is exact.
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
        width = max(row.num_tokens for row in rows) - shared
        input_ids = torch.zeros(len(rows), width, dtype=torch.long)
        batch_index, positions, targets, mask_rows = [], [], [], []
        for i, row in enumerate(rows):
            input_ids[i, : row.num_tokens - shared] = torch.tensor((row.prompt_ids + row.output_ids)[shared:])
            for j in row.loss_positions:
                batch_index.append(i)
                positions.append(len(row.prompt_ids) - 1 + j - shared)  # its logits predict output token j
                targets.append(row.output_ids[j])
                mask_rows.append(row.mask_rows[j] if row.mask_rows is not None else -1)
        index = torch.tensor(batch_index, device=self.device), torch.tensor(positions, device=self.device)
        with torch.autocast(self.device.type, dtype=self.autocast, enabled=self.autocast is not None):
            hidden = self._hidden_states(input_ids.to(self.device), rows[0].prompt_ids[:shared])
            logits = self.model.get_output_embeddings()(hidden[index]).float()
        mask_rows = torch.tensor(mask_rows, device=self.device)
        if mask_table is not None and bool((mask_rows >= 0).any()):
            allowed = mask_table.to(self.device)[mask_rows.clamp(min=0)] | (mask_rows < 0).unsqueeze(1)
            logits = logits.masked_fill(~allowed, float("-inf"))
        logits = logits / temperature
        targets = torch.tensor(targets, device=self.device).unsqueeze(1)
        return logits.gather(1, targets).squeeze(1) - logits.logsumexp(dim=-1)

    def _hidden_states(self, input_ids: torch.Tensor, prefix: list[int]) -> torch.Tensor:
        """The decoder's last hidden states of right-padded rows after a common prefix; no attention mask is needed
        (causal attention never lets a token see the padding after it)."""
        decoder = self.model.get_decoder()
        if not prefix:
            return decoder(input_ids=input_ids).last_hidden_state
        cache = DynamicCache(config=self.model.config)
        decoder(input_ids=torch.tensor([prefix], device=self.device), use_cache=True, **{self._cache_arg: cache})
        cache.batch_repeat_interleave(input_ids.shape[0])
        positions = torch.arange(len(prefix), len(prefix) + input_ids.shape[1], device=self.device)
        return decoder(input_ids=input_ids, position_ids=positions.expand(input_ids.shape[0], -1), use_cache=True,
                       **{self._cache_arg: cache}).last_hidden_state
