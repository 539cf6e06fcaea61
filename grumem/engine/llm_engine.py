"""LLMEngine: requests of token ids in, token ids + logprobs + roles out, with continuous batching.

`add_request` + `step` is the request-level API (a finished request comes back from the step that finished it);
`generate` runs a list of prompts to completion on top of it.
"""
import itertools
import os
import time
from collections.abc import Iterable

import torch
from tqdm.auto import tqdm

from grumem.engine import prompt_logprobs, top_logprobs
from grumem.engine.adapters import CONFIG_FILE as ADAPTER_CONFIG, merge_adapter, read_adapter
from grumem.engine.block_manager import BlockManager
from grumem.engine.loader import checkpoint_tensors
from grumem.engine.config import Config
from grumem.engine.logits_processor import LogitsProcessor
from grumem.engine.model_runner import ModelRunner
from grumem.engine.models.registry import DEFAULT_MODEL, checkpoint_path, load_tokenizer
from grumem.engine.outputs import EngineLoad, EngineStats, RequestOutput
from grumem.engine.sampler import Sampler
from grumem.engine.scheduler import ScheduledBatch, Scheduler
from grumem.engine.sampling_params import SamplingParams
from grumem.engine.sequence import Request, Sequence, TokenRole


class LLMEngine:
    def __init__(self, model: str = DEFAULT_MODEL, **kwargs):
        self.config = Config.from_kwargs(model, **kwargs)
        self._tokenizer = None
        self.model_runner = ModelRunner(self.config)
        self.vocab_size = self.model_runner.model.config.vocab_size
        self.max_model_len = self.model_runner.max_model_len
        self.block_manager = BlockManager(self.model_runner.num_blocks, self.config.kvcache_block_size)
        self.scheduler = Scheduler(self.block_manager, self.config.max_num_seqs, self.config.max_num_batched_tokens)
        self.sampler = Sampler(self.config.seed, self.model_runner.device)
        eos = self.model_runner.model.config.eos_token_id
        self.eos_token_id = eos if isinstance(eos, int) else self.tokenizer.eos_token_id
        self.requests: dict[str, Request] = {}
        self.stats = EngineStats()
        self.logits_processors: dict[str, LogitsProcessor] = {}
        self._request_counter = itertools.count()

    @property
    def tokenizer(self):
        """Loaded on first use: token-id clients (benchmarks, RL) never need one."""
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.config.model)
        return self._tokenizer

    @property
    def device(self) -> torch.device:
        return self.model_runner.device

    def add_logits_processor(self, processor: LogitsProcessor) -> None:
        """Registers a processor under its name; requests opt in with SamplingParams.logits_processors."""
        registered = self.logits_processors.setdefault(processor.name, processor)
        if registered is not processor:
            raise ValueError(f"another logits processor is already registered as {processor.name!r}")

    # --- requests -------------------------------------------------------------------------------------------
    def add_request(
        self, prompt_token_ids: list[int], params: SamplingParams | None = None, request_id: str | None = None,
        priority: int = 0,
    ) -> str:
        """Queues a prompt; lower `priority` is admitted first. Raises ValueError for this request only."""
        params = params or SamplingParams()
        request_id = request_id if request_id is not None else str(next(self._request_counter))
        self._validate(prompt_token_ids, params, request_id)
        seq = Sequence(prompt_token_ids, params, request_id, 0, self.device)
        seq.logits_states = self._new_logits_states(params)
        self.requests[request_id] = Request(request_id, list(prompt_token_ids), params, [seq])
        self.scheduler.add(seq, priority)
        return request_id

    def _validate(self, prompt_token_ids: list[int], params: SamplingParams, request_id: str) -> None:
        if request_id in self.requests:
            raise ValueError(f"request id {request_id!r} is already in flight")
        if len(prompt_token_ids) == 0:
            raise ValueError("empty prompt: a request needs at least one token")
        if len(prompt_token_ids) >= self.max_model_len:
            raise ValueError(f"prompt of {len(prompt_token_ids)} tokens leaves no room to generate within "
                             f"max_model_len={self.max_model_len}")
        if params.prompt_logprobs is not None and params.prompt_logprobs[1] > len(prompt_token_ids):
            raise ValueError(f"prompt_logprobs span {params.prompt_logprobs} runs past the prompt "
                             f"({len(prompt_token_ids)} tokens)")
        bad = next((t for t in prompt_token_ids if not 0 <= t < self.vocab_size), None)
        if bad is not None:
            raise ValueError(f"token id {bad} is outside the vocabulary [0, {self.vocab_size})")
        needed = (len(prompt_token_ids) + self.config.kvcache_block_size) // self.config.kvcache_block_size
        if needed > self.model_runner.num_blocks:
            raise ValueError(f"prompt needs {needed} KV blocks but the cache has {self.model_runner.num_blocks}")

    def _new_logits_states(self, params: SamplingParams) -> list:
        unknown = set(params.logits_processors) - set(self.logits_processors)
        if unknown:
            raise ValueError(f"unknown logits processors {sorted(unknown)}; registered: {sorted(self.logits_processors)}")
        return [(self.logits_processors[name], self.logits_processors[name].new_state(args, params))
                for name, args in params.logits_processors.items()]

    def has_unfinished_requests(self) -> bool:
        return bool(self.requests)

    def partial_output(self, request_id: str) -> RequestOutput | None:
        """What a request in flight has produced so far (for streaming); None when it is not in flight."""
        request = self.requests.get(request_id)
        return None if request is None else request.to_output()

    def load(self) -> EngineLoad:
        scheduler, blocks = self.scheduler, self.model_runner.num_blocks
        return EngineLoad(len(scheduler.running), len(scheduler.waiting),
                          blocks - self.block_manager.num_free_blocks, blocks)

    def abort(self, request_ids: Iterable[str] | None = None) -> list[RequestOutput]:
        """Stops the given requests (every one when None) wherever they are and frees their blocks; returns their
        partial outputs, the stopped sequences with finish_reason "abort". Ids not in flight are ignored."""
        ids = list(self.requests) if request_ids is None else [i for i in request_ids if i in self.requests]
        outputs = []
        for request_id in ids:
            request = self.requests.pop(request_id)
            for seq in request.seqs:
                if not seq.is_finished:
                    self.scheduler.finish(seq, "abort")
            outputs.append(request.to_output())
        return outputs

    # --- one step -------------------------------------------------------------------------------------------
    def step(self) -> list[RequestOutput]:
        """Runs one prefill or decode step; returns the requests it finished (none on an idle engine)."""
        batch = self.scheduler.schedule()
        if not batch.seqs:
            return self._fail_unschedulable() if self.scheduler.waiting else []
        start = time.perf_counter()
        rows = self._sample_rows(batch)
        prompt_rows, prompt_targets, owners = prompt_logprobs.plan(batch)
        logits, scores = self.model_runner.run(batch, [row for row, _ in rows], prompt_rows, prompt_targets)
        prompt_logprobs.record(owners, scores)
        self.scheduler.postprocess(batch)
        self._sample_and_append(logits, rows)
        self._record_step(batch, time.perf_counter() - start)
        return self._collect_finished()

    def _sample_rows(self, batch: ScheduledBatch) -> list[tuple[int, list[Sequence]]]:
        """(batch row, sequences sampling from its logits): a forking prompt's row serves all its samples."""
        rows = []
        for i, (seq, num_new) in enumerate(zip(batch.seqs, batch.num_new_tokens)):
            if seq.num_computed_tokens + num_new == len(seq):
                rows.append((i, [seq]))
        return rows

    def _sample_and_append(self, logits: torch.Tensor, rows: list[tuple[int, list[Sequence]]]) -> None:
        if not rows:
            return  # a prefill step that completed no prompt
        for _, seqs in rows:
            seqs += self._fork(seqs[0])
        seqs = [seq for _, group in rows for seq in group]
        if len(seqs) > len(rows):
            repeats = torch.tensor([len(g) for _, g in rows], device=logits.device)
            logits = logits.repeat_interleave(repeats, dim=0)
        logits, forced = self._apply_logits_processors(logits, seqs)
        token_ids, logprobs = self.sampler(
            logits, [s.params.temperature for s in seqs], [s.params.top_p for s in seqs],
            [s.generator for s in seqs], forced,
        )
        top_logprobs.record(logits, seqs, token_ids)
        self.stats.num_generated_tokens += len(seqs)
        for seq, token_id, logprob in zip(seqs, token_ids, logprobs):
            roles = [processor.observe(state, token_id) for processor, state in seq.logits_states]
            seq.append_token(token_id, logprob, max(roles, default=TokenRole.SAMPLED))
            reason = self._finish_reason(seq, token_id)
            if reason is not None:
                self.scheduler.finish(seq, reason)

    def _apply_logits_processors(self, logits: torch.Tensor, seqs: list[Sequence]) -> tuple[torch.Tensor, list[int]]:
        """Each processor in use applies its batched mask/bias once; the first to force a row's token wins."""
        forced = [-1] * len(seqs)
        for processor in {p: None for seq in seqs for p, _ in seq.logits_states}:
            states = [next((st for p, st in seq.logits_states if p is processor), None) for seq in seqs]
            logits, forces = processor.apply(logits, states)
            forced = [mine if mine >= 0 else theirs for mine, theirs in zip(forced, forces)]
        return logits, forced

    def _fork(self, seq: Sequence) -> list[Sequence]:
        """The other n - 1 samples of a prompt that just finished its prefill; those that share its blocks."""
        request = self.requests[seq.request_id]
        if request.params.n == 1 or request.forked:
            return []
        request.forked = True
        children = [Sequence(seq.token_ids, seq.params, seq.request_id, i, self.device) for i in range(1, seq.params.n)]
        for child in children:
            child.prompt_logprobs = list(seq.prompt_logprobs)
            child.logits_states = [(processor, processor.fork(state)) for processor, state in seq.logits_states]
        request.seqs += children
        self.model_runner.copy_blocks(self.scheduler.fork(seq, children))
        return [child for child in children if child.block_table]

    def _finish_reason(self, seq: Sequence, token_id: int) -> str | None:
        params = seq.params
        if any(processor.is_finished(state) for processor, state in seq.logits_states):
            return "stop"
        if (token_id == self.eos_token_id and not params.ignore_eos) or token_id in params.stop_token_ids:
            return "stop"
        if seq.num_output_tokens >= params.max_tokens or len(seq) >= self.max_model_len:
            return "length"
        return None

    def _record_step(self, batch: ScheduledBatch, seconds: float) -> None:
        if batch.is_prefill:
            self.stats.num_prefill_tokens += sum(batch.num_new_tokens)
            self.stats.num_prefill_steps += 1
            self.stats.prefill_seconds += seconds
        else:
            self.stats.num_decode_tokens += len(batch.seqs)
            self.stats.num_decode_steps += 1
            self.stats.decode_seconds += seconds
        self.stats.num_preemptions = self.scheduler.num_preemptions
        self.stats.num_cached_tokens = self.scheduler.num_cached_tokens
        self.stats.num_queried_tokens = self.scheduler.num_queried_tokens

    def _fail_unschedulable(self) -> list[RequestOutput]:
        """Nothing can run: the head request needs more free blocks than exist (pinned prefixes hold the rest)."""
        seq = self.scheduler.waiting[0]
        free, total = self.block_manager.num_free_blocks, self.model_runner.num_blocks
        error = (f"KV cache exhausted: the sequence needs {seq.num_blocks(self.block_manager.block_size)} blocks, "
                 f"{free} of {total} are free and nothing is running to free more")
        request = self.requests.pop(seq.request_id)
        for other in request.seqs:
            if not other.is_finished:
                self.scheduler.finish(other, "error")
        return [request.to_output(error)] + self._collect_finished()

    def _collect_finished(self) -> list[RequestOutput]:
        done = [r for r in self.requests.values() if len(r.seqs) == r.params.n and all(s.is_finished for s in r.seqs)]
        return [self.requests.pop(r.request_id).to_output() for r in done]

    # --- batch API ------------------------------------------------------------------------------------------
    def generate(
        self, prompts: list[list[int]], sampling_params: SamplingParams | list[SamplingParams] | None = None,
        use_tqdm: bool = False,
    ) -> list[RequestOutput]:
        """Runs every prompt to completion; a bad prompt gets an output with `error` set, the rest run normally."""
        params = sampling_params if isinstance(sampling_params, list) else [sampling_params] * len(prompts)
        results: dict[str, RequestOutput] = {}
        ids = []
        for prompt, p in zip(prompts, params):
            request_id = f"generate-{next(self._request_counter)}"
            ids.append(request_id)
            try:
                self.add_request(prompt, p, request_id)
            except ValueError as e:
                results[request_id] = RequestOutput(request_id, list(prompt), [], 0, str(e))
        with tqdm(total=len(prompts), desc="generate", disable=not use_tqdm) as bar:
            bar.update(len(results))
            while any(i not in results for i in ids):
                for output in self.step():
                    results[output.request_id] = output
                    bar.update(1)
        return [results[i] for i in ids]

    # --- weights and cache ----------------------------------------------------------------------------------
    def update_weights(self, named_tensors) -> None:
        """Loads new weights (checkpoint names, packed as at load time) and drops the now stale prefix cache."""
        if self.requests:
            raise RuntimeError("update_weights needs an idle engine: finish or abort the requests in flight first")
        self.model_runner.update_weights(named_tensors)
        self.reset_prefix_cache()

    def load_weights(self, folder: str) -> None:
        """update_weights from a Hugging Face checkpoint folder of this model, or from a LoRA adapter folder (peft's)
        merged into the base checkpoint the engine was started from."""
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"no checkpoint folder {folder!r}")
        if os.path.isfile(os.path.join(folder, ADAPTER_CONFIG)):
            base = checkpoint_path(self.config.model)
            if base is None:
                raise ValueError(f"{self.config.model!r} has random weights: an adapter needs its base checkpoint")
            tensors = merge_adapter(checkpoint_tensors(base), read_adapter(folder))
        else:
            tensors = checkpoint_tensors(folder)
        self.update_weights(tensors)

    def reset_prefix_cache(self) -> None:
        self.block_manager.reset_prefix_cache()

    def pin_prefix(self, token_ids: list[int]) -> list[int]:
        """Keeps the cached full blocks of a prefix (e.g. a question while its document is read); see unpin."""
        return self.block_manager.pin(token_ids)

    def unpin(self, block_ids: list[int]) -> None:
        self.block_manager.unpin(block_ids)
