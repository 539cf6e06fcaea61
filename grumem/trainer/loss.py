"""DAPO's per-token clipped surrogate (decoupled clip range, optional dual clip) and the k3 KL estimate.

Both return per-token losses; the trainer sums them over the loss tokens and divides by the token count of the whole
mini-batch (DAPO's token-mean), so the update does not depend on how the mini-batch is split into micro-batches.
"""
import torch


def clipped_surrogate(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
                      eps_low: float, eps_high: float, dual_clip: float | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """(-min(r A, clip(r, 1 - eps_low, 1 + eps_high) A) per token, whether the clip decided it), r = pi / pi_old."""
    ratio = torch.exp((logprobs - old_logprobs).clamp(-20.0, 20.0))
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1.0 - eps_low, 1.0 + eps_high)
    loss = torch.maximum(unclipped, clipped)
    was_clipped = clipped > unclipped
    if dual_clip is not None:
        capped = torch.minimum(loss, -advantages * dual_clip)  # bounds a negative-advantage token's push
        loss = torch.where(advantages < 0, capped, loss)
    return loss, was_clipped


def k3_kl(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """Unbiased, always >= 0 estimate of KL(pi || pi_ref) from samples of pi (verl's low_var_kl), clamped."""
    log_ratio = (ref_logprobs - logprobs).clamp(-20.0, 20.0)
    return (torch.exp(log_ratio) - log_ratio - 1).clamp(max=10.0)


def truncated_is_weights(old_logprobs: torch.Tensor, engine_logprobs: torch.Tensor, cap: float) -> torch.Tensor:
    """TIS: min(pi_old / pi_engine, cap) per token, a constant of the loss. Corrects for the engine sampling with
    other numerics (bf16, other kernels) than the trainer's pi_old."""
    return torch.exp((old_logprobs - engine_logprobs).clamp(-20.0, 20.0)).clamp(max=cap).detach()
