"""Settings of the Multi-Conv DAPO trainer, with the papers' values as defaults where they give them."""
from dataclasses import dataclass

import torch

from grumem.trainer.rewards import OUTCOMES

OLD_LOGPROBS = ("recompute", "engine")
AUTOCAST = {None: None, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(slots=True)
class TrainerConfig:
    group_size: int = 16  # G rollouts per question (GRU-Mem, MemAgent: 16)
    groups_per_step: int = 8  # questions whose groups make one rollout batch
    max_generation_rounds: int = 4  # dynamic sampling: rounds of rollouts to fill the batch with informative groups
    mini_batches: int = 1  # optimizer updates per rollout batch; rows are shuffled and split evenly
    micro_batch_tokens: int = 4096  # positions per forward/backward pass (activation memory); the update does not
    # depend on it
    share_prefixes: bool = True  # compute a prompt prefix common to several rows once per pass (exact)
    prompt_grad: bool = True  # False: no gradient through the prompts (policy.py; cheaper, truncated)
    lr: float = 1e-6
    warmup_steps: int = 0  # linear warm-up, in optimizer updates
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    eps_low: float = 0.2
    eps_high: float = 0.28  # DAPO's clip-higher; MemAgent's released scripts use 0.2
    dual_clip: float | None = None  # c > 1: a negative-advantage token's loss is capped at c * |A| (verl: 3)
    tis_cap: float | None = None  # truncated importance sampling: tokens weighted by min(pi_old / pi_engine, cap)
    kl_coef: float = 0.0  # weight of the k3 KL to the initial weights (MemAgent: 0.001); 0 loads no reference
    outcome: str = "boxed"  # exact match of the \\boxed{} answer (paper), or "metric": the task's metric, unboxed too
    alpha: float = 0.9  # GRU-Mem: A = alpha * A_traj + (1 - alpha) * A_turn
    std_normalize: bool = False  # divide by the group's std (DAPO) or only centre (GRU-Mem, MemAgent)
    old_logprobs: str = "recompute"  # "recompute" with the trained weights, or "engine" (bypass: the rollout's)
    mask_truncated: bool = False  # DAPO's overlong filtering: turns cut at max_tokens carry no loss
    temperature: float = 1.0  # rollout temperature; the logprobs are recomputed at the same temperature
    # "bfloat16": forward and backward under bf16 autocast over the fp32 weights. SmolLM2 on a CPU with AVX512-BF16:
    # 2.4-3x faster passes; the trainer's logprobs then differ from an fp32 engine's by about 0.03 nats per token
    autocast: str | None = None
    seed: int = 0

    def __post_init__(self):
        for name in ("group_size", "groups_per_step", "max_generation_rounds", "mini_batches", "micro_batch_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.eps_low < 1 or self.eps_high < 0:
            raise ValueError(f"need 0 <= eps_low < 1 and eps_high >= 0, got {self.eps_low}, {self.eps_high}")
        if self.tis_cap is not None and self.tis_cap <= 0:
            raise ValueError(f"tis_cap must be > 0 or None, got {self.tis_cap}")
        if self.dual_clip is not None and self.dual_clip <= 1:
            raise ValueError(f"dual_clip must be > 1 or None, got {self.dual_clip}")
        if not 0 <= self.alpha <= 1:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha}")
        if self.outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {OUTCOMES}, got {self.outcome!r}")
        if self.old_logprobs not in OLD_LOGPROBS:
            raise ValueError(f"old_logprobs must be one of {OLD_LOGPROBS}, got {self.old_logprobs!r}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0 (greedy rollouts have no distribution to learn from), "
                             f"got {self.temperature}")
        if self.autocast not in AUTOCAST:
            raise ValueError(f"autocast must be one of {tuple(AUTOCAST)}, got {self.autocast!r}")
        if self.lr <= 0 or self.kl_coef < 0:
            raise ValueError(f"need lr > 0 and kl_coef >= 0, got {self.lr}, {self.kl_coef}")
