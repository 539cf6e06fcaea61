"""The engine's one interface for per-request logits work (constraints, biases), in the style of vLLM v1's logits
processors: the engine knows token ids and tensors, a processor knows what its requests mean.

A processor is registered once with the engine (`LLM.add_logits_processor`) under its `name`; a request opts in with
`SamplingParams(logits_processors={name: args})`. The engine keeps one state per sequence and calls:
- `new_state(args, params)` when a request is added (a ValueError rejects that request only);
- `observe_prompt_logprobs(state, logprobs)` once the span of `params.prompt_logprobs` is computed;
- `apply(logits, states)` once per step over the rows that sample: one batched mask/bias, and a token to force
  per row (forced tokens bypass sampling, carry logprob 0 and role FORCED);
- `observe(state, token_id)` with each token appended, which returns the token's TokenRole;
- `is_finished(state)`: the sequence stops with finish_reason "stop";
- `fork(state)` for the other n - 1 samples of a prompt (called right after its prefill, before any token);
- `output(state)`: what the completion reports under `CompletionOutput.extra[name]`.
"""
from abc import ABC, abstractmethod
from typing import Any

import torch

from grumem.engine.sampling_params import SamplingParams


class LogitsProcessor(ABC):
    name: str

    @abstractmethod
    def new_state(self, args: Any, params: SamplingParams) -> Any:
        """A sequence's state from its request's args; raises ValueError on bad args."""

    @abstractmethod
    def apply(self, logits: torch.Tensor, states: list[Any | None]) -> tuple[torch.Tensor, list[int]]:
        """(logits with this processor's mask/bias, forced token id per row or -1); None marks rows it does not own.
        `logits` is (num_rows, vocab) fp32 and may be returned modified out of place."""

    @abstractmethod
    def observe(self, state: Any, token_id: int) -> int:
        """Advances on the token just appended; returns its TokenRole."""

    def is_finished(self, state: Any) -> bool:
        return False

    def observe_prompt_logprobs(self, state: Any, logprobs: list[float]) -> None:
        pass

    @abstractmethod
    def fork(self, state: Any) -> Any:
        """An independent copy for a forked sample (states may share read-only tables: copy, never deepcopy them)."""

    def output(self, state: Any) -> Any:
        return None
