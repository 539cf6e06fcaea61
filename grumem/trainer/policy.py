"""The trained weights: a Hugging Face transformers causal LM, full or with LoRA adapters (peft, every linear layer),
and the per-token logprobs the loss needs.

Rows that start with the same prompt tokens (the G rollouts of a question read the same section at the same chunk)
can be passed with `shared`: that prefix is computed once, with gradients, and each row's remainder runs on its keys
and values. Under causal attention the prefix never sees what follows it, so this is exact.
`prompt_grad=False` computes each prompt (but its last token) without gradients: the loss then trains how the
output tokens read the prompt, not how the prompt is encoded (a truncated gradient, 2-3x cheaper per row).
The engine serves its own copy of the weights; `named_tensors()` hands them over under the checkpoint's names, with
LoRA merged in (`LLM.update_weights` packs them as at load time).
"""
import inspect
from dataclasses import dataclass

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from peft.tuners.lora import LoraLayer
from transformers import AutoModelForCausalLM, DynamicCache

from grumem.trainer.rows import TrainingRow


@dataclass(frozen=True, slots=True)
class LoraSettings:
    rank: int = 8
    alpha: float = 16.0

    def __post_init__(self):
        if self.rank < 1 or self.alpha <= 0:
            raise ValueError(f"LoRA needs rank >= 1 and alpha > 0, got {self.rank}, {self.alpha}")


class Policy:
    def __init__(self, checkpoint: str, device: str = "cpu", autocast: torch.dtype | None = None,
                 lora: LoraSettings | None = None, adapter: str | None = None):
        """Weights in fp32; `autocast` (e.g. torch.bfloat16) runs the forward and backward passes in that dtype.
        `lora`: train new adapters on every linear layer (the base frozen); `adapter`: go on training a saved one."""
        model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32).to(device)
        model.config.use_cache = False
        if adapter is not None:
            model = PeftModel.from_pretrained(model, adapter, is_trainable=True)
        elif lora is not None:
            model = get_peft_model(model, LoraConfig(r=lora.rank, lora_alpha=lora.alpha, target_modules="all-linear",
                                                     lora_dropout=0.0))
        self.model, self.is_lora = model, isinstance(model, PeftModel)
        self.base = model.get_base_model() if self.is_lora else model
        self.device, self.autocast = torch.device(device), autocast
        decoder_args = inspect.signature(self.base.get_decoder().forward).parameters
        self._cache_arg = "cache" if "cache" in decoder_args else "past_key_values"  # renamed in transformers 5.2x

    def parameters(self) -> list[torch.nn.Parameter]:
        """What the optimizer updates: every weight, or only the adapters."""
        return [p for p in self.model.parameters() if p.requires_grad]

    @torch.no_grad()
    def named_tensors(self):
        """(checkpoint name, tensor) of every weight the engine serves, LoRA merged in."""
        if not self.is_lora:
            yield from ((name, param.detach()) for name, param in self.model.named_parameters())
            return
        deltas = {f"{name}.weight": module.get_delta_weight(module.active_adapters[0])
                  for name, module in self.base.named_modules() if isinstance(module, LoraLayer)}
        for name, param in self.base.named_parameters():
            if "lora_" in name:
                continue
            name = name.replace(".base_layer.", ".")
            yield name, param + deltas[name] if name in deltas else param

    def push_to(self, llm) -> None:
        """The engine serves these weights from now on (LLM.update_weights also drops its stale prefix cache)."""
        llm.update_weights(self.named_tensors())

    def save(self, folder: str, tokenizer=None) -> None:
        """A Hugging Face checkpoint, or for LoRA the adapter alone (adapter_config.json, adapter_model.safetensors)."""
        self.model.save_pretrained(folder)
        if tokenizer is not None:
            tokenizer.save_pretrained(folder)

    def token_logprobs(self, rows: list[TrainingRow], temperature: float, mask_table: torch.Tensor | None = None,
                       shared: int = 0, prompt_grad: bool = True) -> torch.Tensor:
        """log pi of every loss token of `rows` (forced tokens have none), concatenated row after row: logits /
        temperature, log-softmax over the tokens the constraint allowed there (as the engine's sampler did).
        `shared`: the rows' first `shared` prompt tokens are identical (at most the shortest prompt minus one).
        `prompt_grad=False`: no gradient through the prompts (module docstring); `shared` is then not used."""
        assert shared == 0 or all(len(r.prompt_ids) > shared for r in rows)
        targets, mask_rows = [], []
        for row in rows:
            targets += [row.output_ids[j] for j in row.loss_positions]
            mask_rows += [row.mask_rows[j] if row.mask_rows is not None else -1 for j in row.loss_positions]
        with torch.autocast(self.device.type, dtype=self.autocast, enabled=self.autocast is not None):
            if not prompt_grad:
                hidden = torch.cat([self._after_prefix([row], len(row.prompt_ids) - 1, prefix_grad=False)
                                    for row in rows])
            elif shared:
                hidden = self._after_prefix(rows, shared)
            else:
                hidden = self._padded(rows)
            logits = self.base.get_output_embeddings()(hidden).float()
        if mask_table is not None and any(row != -1 for row in mask_rows):
            table_rows = torch.tensor([row if isinstance(row, int) else -1 for row in mask_rows], device=self.device)
            allowed = mask_table.to(self.device)[table_rows.clamp(min=0)] | (table_rows < 0).unsqueeze(1)
            for k, row in enumerate(mask_rows):
                if not isinstance(row, int):  # a quote's choice: the ids it allowed
                    allowed[k] = False
                    allowed[k, list(row)] = True
            logits = logits.masked_fill(~allowed, float("-inf"))
        logits = logits / temperature
        targets = torch.tensor(targets, device=self.device).unsqueeze(1)
        return logits.gather(1, targets).squeeze(1) - logits.logsumexp(dim=-1)

    @staticmethod
    def _loss_positions(row: TrainingRow, offset: int = 0) -> list[int]:
        """The positions (after `offset`) whose hidden states predict the row's loss tokens."""
        return [len(row.prompt_ids) - 1 + j - offset for j in row.loss_positions]

    def _padded(self, rows: list[TrainingRow]) -> torch.Tensor:
        """The last hidden states at the loss positions of right-padded rows; no attention mask is needed (causal
        attention never lets a token see the padding after it)."""
        positions = [self._loss_positions(row) for row in rows]
        input_ids = torch.zeros(len(rows), max(row.num_tokens for row in rows), dtype=torch.long)
        for i, row in enumerate(rows):
            input_ids[i, : row.num_tokens] = torch.tensor(row.prompt_ids + row.output_ids)
        hidden = self.base.get_decoder()(input_ids=input_ids.to(self.device)).last_hidden_state
        rows_index = torch.tensor([i for i, row_positions in enumerate(positions) for _ in row_positions])
        positions_index = torch.tensor([p for row_positions in positions for p in row_positions])
        return hidden[rows_index.to(self.device), positions_index.to(self.device)]

    def _after_prefix(self, rows: list[TrainingRow], shared: int, prefix_grad: bool = True) -> torch.Tensor:
        """The prefix once, then each row's remainder on its keys and values, one row at a time (no padding)."""
        decoder, cache = self.base.get_decoder(), DynamicCache(config=self.base.config)
        prefix = torch.tensor([rows[0].prompt_ids[:shared]], device=self.device)
        with torch.set_grad_enabled(prefix_grad and torch.is_grad_enabled()):
            decoder(input_ids=prefix, use_cache=True, **{self._cache_arg: cache})
        prefix_kv = [(layer.keys, layer.values) for layer in cache.layers]
        selected = []
        for row in rows:
            row_positions = self._loss_positions(row, shared)
            rest = torch.tensor([(row.prompt_ids + row.output_ids)[shared:]], device=self.device)
            at = torch.arange(shared, row.num_tokens, device=self.device).unsqueeze(0)
            hidden = decoder(input_ids=rest, position_ids=at, use_cache=True, **{self._cache_arg: cache})
            selected.append(hidden.last_hidden_state[0, row_positions])
            for layer, (keys, values) in zip(cache.layers, prefix_kv):  # back to the prefix alone
                layer.keys, layer.values = keys, values
        return torch.cat(selected)
