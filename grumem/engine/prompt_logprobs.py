"""Prompt logprobs: which positions of a prefill step to score, and where the scores go.

A sequence asks for the logprobs of prompt tokens [start, end); the logits at position p score token p + 1, so
positions start - 1 .. end - 2 are scored as chunked prefill computes them (the prefix cache never serves them).
Once a sequence's span is complete, its logits processors observe the logprobs (`observe_prompt_logprobs`).
"""
from grumem.engine.scheduler import ScheduledBatch
from grumem.engine.sequence import Sequence


def plan(batch: ScheduledBatch) -> tuple[list[int], list[int], list[Sequence]]:
    """(flat rows of this step, target token ids, owning sequences) of the prompt logprobs it computes."""
    rows, targets, owners = [], [], []
    offset = 0
    for seq, num_new in zip(batch.seqs, batch.num_new_tokens):
        if batch.is_prefill and seq.owes_prompt_logprobs:
            start, end = seq.params.prompt_logprobs
            first = start - 1 + len(seq.prompt_logprobs)
            assert first >= seq.num_computed_tokens, "owed prompt positions were served by the prefix cache"
            for position in range(first, min(end - 1, seq.num_computed_tokens + num_new)):
                rows.append(offset + position - seq.num_computed_tokens)
                targets.append(seq.token_ids[position + 1])
                owners.append(seq)
        offset += num_new
    return rows, targets, owners


def record(owners: list[Sequence], logprobs: list[float]) -> None:
    for seq, logprob in zip(owners, logprobs):
        seq.prompt_logprobs.append(logprob)
    for seq in set(owners):
        if not seq.owes_prompt_logprobs:
            for processor, state in seq.logits_states:
                processor.observe_prompt_logprobs(state, seq.prompt_logprobs)
