"""The trained weights: a Hugging Face transformers causal LM, and the per-token logprobs the loss needs.

The engine serves its own copy of the weights; `named_tensors()` hands them over under the checkpoint's names
(`LLM.update_weights` packs them as at load time).
"""
import torch
from transformers import AutoModelForCausalLM

from grumem.trainer.rows import TrainingRow


class Policy:
    def __init__(self, checkpoint: str, device: str = "cpu", autocast: torch.dtype | None = None):
        """Weights in fp32; `autocast` (e.g. torch.bfloat16) runs the forward and backward passes in that dtype."""
        self.model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32).to(device)
        self.model.config.use_cache = False
        self.device, self.autocast = torch.device(device), autocast

    def named_tensors(self):
        return ((name, param.detach()) for name, param in self.model.named_parameters())

    def save(self, folder: str, tokenizer=None) -> None:
        self.model.save_pretrained(folder)
        if tokenizer is not None:
            tokenizer.save_pretrained(folder)

    def token_logprobs(self, rows: list[TrainingRow], temperature: float, mask_table: torch.Tensor | None = None
                       ) -> torch.Tensor:
        """log pi of every loss token of `rows` (forced tokens have none), concatenated row after row: logits /
        temperature, log-softmax over the tokens the constraint allowed there (as the engine's sampler did)."""
        width = max(row.num_tokens for row in rows)
        input_ids = torch.zeros(len(rows), width, dtype=torch.long)
        batch_index, positions, targets, mask_rows = [], [], [], []
        for i, row in enumerate(rows):
            input_ids[i, : row.num_tokens] = torch.tensor(row.prompt_ids + row.output_ids)
            for j in row.loss_positions:
                batch_index.append(i)
                positions.append(len(row.prompt_ids) - 1 + j)  # the logits there predict output token j
                targets.append(row.output_ids[j])
                mask_rows.append(row.mask_rows[j] if row.mask_rows is not None else -1)
        index = torch.tensor(batch_index, device=self.device), torch.tensor(positions, device=self.device)
        with torch.autocast(self.device.type, dtype=self.autocast, enabled=self.autocast is not None):
            # right padding needs no attention mask: causal attention never lets a token see the padding after it
            hidden = self.model.get_decoder()(input_ids=input_ids.to(self.device)).last_hidden_state
            logits = self.model.get_output_embeddings()(hidden[index]).float()
        mask_rows = torch.tensor(mask_rows, device=self.device)
        if mask_table is not None and bool((mask_rows >= 0).any()):
            allowed = mask_table.to(self.device)[mask_rows.clamp(min=0)] | (mask_rows < 0).unsqueeze(1)
            logits = logits.masked_fill(~allowed, float("-inf"))
        logits = logits / temperature
        targets = torch.tensor(targets, device=self.device).unsqueeze(1)
        return logits.gather(1, targets).squeeze(1) - logits.logsumexp(dim=-1)
