"""A sequence in flight (token ids, KV blocks, sampling state, what it produced) and the request that owns it."""
import itertools
import time
from dataclasses import dataclass, field
from enum import Enum, auto
from typing import Any

import torch

from grumem.engine.outputs import CompletionOutput, RequestOutput, RequestTimes
from grumem.engine.sampling_params import SamplingParams
from grumem.engine.seeding import mix_seed


class SequenceStatus(Enum):
    WAITING = auto()
    RUNNING = auto()
    FINISHED = auto()


class TokenRole:
    """What produced an output token; the trainer masks FORCED tokens out of the loss."""

    SAMPLED, CHOICE, FORCED = 0, 1, 2  # ordered: when processors disagree the larger role is reported


class Sequence:
    _counter = itertools.count()

    def __init__(
        self, token_ids: list[int], params: SamplingParams, request_id: str, index: int = 0,
        device: torch.device | str = "cpu",
    ):
        self.seq_id = next(Sequence._counter)
        self.request_id, self.index = request_id, index
        self.token_ids = list(token_ids)
        self.num_prompt_tokens = len(token_ids)
        self.params = params
        self.status = SequenceStatus.WAITING
        self.block_table: list[int] = []
        self.num_computed_tokens = 0  # tokens whose KV is in the cache
        self.num_marked_blocks = 0  # leading blocks the block manager has marked computed
        self.num_prefix_cached_tokens = 0  # prompt tokens served by the prefix cache at first admission
        self.output_logprobs: list[float] = []
        self.output_roles: list[int] = []
        self.output_top_logprobs: list[dict[int, float]] = []  # with params.logprobs
        self.first_token_time: float | None = None
        self.prompt_logprobs: list[float] = []  # of the prompt tokens in params.prompt_logprobs, as computed
        self.finish_reason: str | None = None
        self.logits_states: list[tuple[Any, Any]] = []  # (LogitsProcessor, this sequence's state in it)
        # forked samples of one request draw different tokens from one seed
        self.generator = None
        if params.seed is not None:
            self.generator = torch.Generator(device=device).manual_seed(mix_seed(params.seed, index))

    def __len__(self) -> int:
        return len(self.token_ids)

    @property
    def num_output_tokens(self) -> int:
        return len(self.token_ids) - self.num_prompt_tokens

    @property
    def output_token_ids(self) -> list[int]:
        return self.token_ids[self.num_prompt_tokens :]

    @property
    def is_finished(self) -> bool:
        return self.status == SequenceStatus.FINISHED

    @property
    def owes_prompt_logprobs(self) -> bool:
        span = self.params.prompt_logprobs
        return span is not None and len(self.prompt_logprobs) < span[1] - span[0]

    @property
    def max_cached_tokens(self) -> int:
        """Prompt tokens the prefix cache may serve: the last one and owed prompt logprobs must be computed."""
        if self.owes_prompt_logprobs:
            return self.params.prompt_logprobs[0] - 1
        return len(self.token_ids) - 1

    def num_blocks(self, block_size: int) -> int:
        return (len(self.token_ids) + block_size - 1) // block_size

    def block_tokens(self, i: int, block_size: int) -> list[int]:
        return self.token_ids[i * block_size : (i + 1) * block_size]

    def append_token(self, token_id: int, logprob: float, role: int) -> None:
        if self.first_token_time is None:
            self.first_token_time = time.perf_counter()
        self.token_ids.append(token_id)
        self.output_logprobs.append(logprob)
        self.output_roles.append(role)


@dataclass
class Request:
    """One prompt and its n sequences (one, or n after the prompt's prefill forks)."""

    request_id: str
    prompt_token_ids: list[int]
    params: SamplingParams
    seqs: list[Sequence] = field(default_factory=list)
    forked: bool = False
    arrival_time: float = field(default_factory=time.perf_counter)

    def to_output(self, error: str | None = None) -> RequestOutput:
        """What it produced so far (everything, once its sequences are finished)."""
        wants_top = self.params.logprobs is not None
        outputs = [
            CompletionOutput(s.index, s.output_token_ids, list(s.output_logprobs), list(s.output_roles),
                             "error" if error else s.finish_reason,
                             {processor.name: processor.output(state) for processor, state in s.logits_states},
                             list(s.output_top_logprobs) if wants_top else None)
            for s in sorted(self.seqs, key=lambda s: s.index)
        ]
        first = self.seqs[0]
        complete = self.params.prompt_logprobs is not None and not first.owes_prompt_logprobs
        prompt_logprobs = first.prompt_logprobs if complete else None
        first_tokens = [s.first_token_time for s in self.seqs if s.first_token_time is not None]
        finished = time.perf_counter() if all(s.is_finished for s in self.seqs) else None
        times = RequestTimes(self.arrival_time, min(first_tokens, default=None), finished)
        return RequestOutput(self.request_id, self.prompt_token_ids, outputs, first.num_prefix_cached_tokens, error,
                             prompt_logprobs, times)
