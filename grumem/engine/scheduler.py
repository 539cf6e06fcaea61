"""Continuous batching: which sequences run in the next step, and how many of their tokens.

A step is either prefill (new or preempted sequences, chunked to a token budget; a partly prefilled sequence keeps
its place at the head of the queue) or decode (one token for every running sequence). When blocks run out during
decode, the most recently admitted sequence is preempted by recompute: its blocks are freed and it waits, with the
tokens it generated, to be prefilled again (mostly from the prefix cache).
"""
import bisect
import itertools
from dataclasses import dataclass, field

from grumem.engine.block_manager import BlockManager
from grumem.engine.sequence import Sequence, SequenceStatus

PREEMPTED_PRIORITY = -1  # preempted and partly prefilled sequences go first


@dataclass
class ScheduledBatch:
    is_prefill: bool
    seqs: list[Sequence] = field(default_factory=list)
    num_new_tokens: list[int] = field(default_factory=list)  # tokens computed per sequence this step


class Scheduler:
    def __init__(self, block_manager: BlockManager, max_num_seqs: int, max_num_batched_tokens: int):
        self.block_manager = block_manager
        self.max_num_seqs, self.max_num_batched_tokens = max_num_seqs, max_num_batched_tokens
        self.waiting: list[Sequence] = []
        self._waiting_keys: list[tuple[int, bool, int]] = []
        self.running: list[Sequence] = []
        self.num_preemptions = 0
        self.num_cached_tokens = 0  # tokens served by the prefix cache at admission
        self.num_queried_tokens = 0  # tokens looked up in it at admission
        self._arrival = itertools.count()

    def is_finished(self) -> bool:
        return not self.waiting and not self.running

    def add(self, seq: Sequence, priority: int = 0) -> None:
        """Lower priority values are admitted first; within a priority, prompts whose first block is cached (cheap
        to prefill, and their cached blocks could be evicted while they wait), then FIFO."""
        cold = not self.block_manager.cached_prefix(seq.token_ids, 1)
        key = (priority, cold, next(self._arrival))
        i = bisect.bisect(self._waiting_keys, key)
        self._waiting_keys.insert(i, key)
        self.waiting.insert(i, seq)
        seq.status = SequenceStatus.WAITING

    def add_running(self, seq: Sequence) -> None:
        """A forked sequence that already holds its blocks joins the decode batch directly."""
        seq.status = SequenceStatus.RUNNING
        self.running.append(seq)

    def remove_waiting(self, seq: Sequence) -> None:
        i = self.waiting.index(seq)
        del self._waiting_keys[i]
        self.waiting.pop(i)

    def schedule(self) -> ScheduledBatch:
        self.block_manager.computing.clear()
        batch = self._schedule_prefill()
        return batch if batch.seqs else self._schedule_decode()

    def _schedule_prefill(self) -> ScheduledBatch:
        batch, budget = ScheduledBatch(is_prefill=True), self.max_num_batched_tokens
        for seq in self.waiting:
            if budget == 0 or len(self.running) + len(batch.seqs) >= self.max_num_seqs:
                break
            if not seq.block_table:
                if not self.block_manager.can_allocate(seq):
                    break
                self.block_manager.allocate(seq)
                self.num_cached_tokens += seq.num_computed_tokens
                self.num_queried_tokens += len(seq)
                if seq.num_output_tokens == 0:
                    seq.num_prefix_cached_tokens = seq.num_computed_tokens
            num_new = min(len(seq) - seq.num_computed_tokens, budget)
            self._mark_computing(seq, num_new)
            batch.seqs.append(seq)
            batch.num_new_tokens.append(num_new)
            budget -= num_new
        return batch

    def _mark_computing(self, seq: Sequence, num_new: int) -> None:
        block_size = self.block_manager.block_size
        end_block = (seq.num_computed_tokens + num_new) // block_size
        self.block_manager.computing.update(seq.block_table[seq.num_computed_tokens // block_size : end_block])

    def _schedule_decode(self) -> ScheduledBatch:
        batch = ScheduledBatch(is_prefill=False)
        queue = list(self.running)
        while queue:
            seq = queue.pop(0)
            while not self.block_manager.can_append(seq):
                victim = queue.pop() if queue else seq
                self.preempt(victim)
                if victim is seq:
                    break
            else:
                self.block_manager.may_append(seq)
                batch.seqs.append(seq)
                batch.num_new_tokens.append(1)
        return batch

    def preempt(self, seq: Sequence) -> None:
        self.running.remove(seq)
        self.block_manager.deallocate(seq)
        self.add(seq, PREEMPTED_PRIORITY)
        self.num_preemptions += 1

    def postprocess(self, batch: ScheduledBatch) -> None:
        """After the step ran: its tokens' KV is in the cache (full blocks become cacheable), and sequences whose
        prompt is now fully computed move from waiting to running."""
        for seq, num_new in zip(batch.seqs, batch.num_new_tokens):
            seq.num_computed_tokens += num_new
            self.block_manager.mark_computed(seq)
            if batch.is_prefill and seq.num_computed_tokens == len(seq):
                self.remove_waiting(seq)
                self.add_running(seq)

    def fork(self, parent: Sequence, children: list[Sequence]) -> list[tuple[int, int]]:
        """Children share the parent's blocks and decode beside it; one that gets no block for its copy of a partial
        last block waits to be recomputed through the prefix cache. Returns the (src, dst) blocks to copy."""
        copies = self.block_manager.fork(parent, children)
        for child in children:
            if child.block_table:
                self.add_running(child)
            else:
                self.add(child)
        return copies

    def finish(self, seq: Sequence, reason: str) -> None:
        """Ends a sequence wherever it is (running, or waiting when aborted) and frees its blocks."""
        if seq in self.running:
            self.running.remove(seq)
        elif seq in self.waiting:
            self.remove_waiting(seq)
        seq.finish_reason = reason
        seq.status = SequenceStatus.FINISHED
        self.block_manager.deallocate(seq)
