"""The k likeliest tokens at each sampled position, for requests with SamplingParams.logprobs = k (the OpenAI API's
`logprobs`). Taken under the model's distribution after the logits processors at temperature 1, in one top-k over
the rows that ask; -inf (masked tokens) is floored so that the numbers stay JSON."""
import torch

from grumem.engine.sequence import Sequence

FLOOR = -9999.0


def record(logits: torch.Tensor, seqs: list[Sequence], token_ids: list[int]) -> None:
    rows = [i for i, seq in enumerate(seqs) if seq.params.logprobs is not None]
    if not rows:
        return
    index = torch.tensor(rows, device=logits.device)
    logprobs = logits.index_select(0, index).log_softmax(dim=-1).nan_to_num(nan=FLOOR, neginf=FLOOR)
    k = max(seqs[i].params.logprobs for i in rows)
    top_values, top_ids = logprobs.topk(k, dim=-1) if k else (logprobs[:, :0], logprobs[:, :0].long())
    chosen = logprobs.gather(1, torch.tensor([[token_ids[i]] for i in rows], device=logits.device))
    top_values, top_ids = top_values.tolist(), top_ids.tolist()
    for j, i in enumerate(rows):
        k_i = seqs[i].params.logprobs
        entry = dict(zip(top_ids[j][:k_i], top_values[j][:k_i]))
        entry.setdefault(token_ids[i], chosen[j, 0].item())
        seqs[i].output_top_logprobs.append(entry)
