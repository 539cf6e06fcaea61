"""How rows become passes: mini-batches (one optimizer update each) and micro-batches (one forward and backward each),
the latter grouped by shared prompt prefix so that each prefix is computed once."""
import itertools
from collections.abc import Iterator

from grumem.trainer.rows import TrainingRow

MIN_SHARED = 32  # shorter common prefixes are not worth a separate pass


def split_evenly(items: list, parts: int) -> list[list]:
    size, extra = divmod(len(items), parts)
    bounds = list(itertools.accumulate([size + (i < extra) for i in range(parts)], initial=0))
    return [items[a:b] for a, b in zip(bounds, bounds[1:]) if b > a]


def common_prefix(a: list[int], b: list[int]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def _shareable(a: TrainingRow, b: TrainingRow) -> int:
    """Prompt tokens two rows could compute once: their common prefix, short of either prompt's last token."""
    return min(common_prefix(a.prompt_ids, b.prompt_ids), len(a.prompt_ids) - 1, len(b.prompt_ids) - 1)


def prefix_groups(rows: list[TrainingRow], min_shared: int = MIN_SHARED) -> list[tuple[int, list[TrainingRow]]]:
    """(shared, rows): rows whose prompts agree on their first `shared` tokens, which stop short of every prompt's
    last token (that position's logits predict the first output token); lone rows get shared 0. The groups are
    runs of the sorted prompts, chosen to compute the fewest positions (a run of n rows sharing s computes
    its rows' tokens minus (n - 1) * s)."""
    ordered = sorted(rows, key=lambda r: r.prompt_ids)  # rows sharing a prefix sort next to each other
    links = [_shareable(a, b) for a, b in zip(ordered, ordered[1:])]  # a run shares the minimum of its links
    fewest, run_start = [0] * (len(ordered) + 1), [0] * (len(ordered) + 1)  # over ordered[:j]
    for j in range(1, len(ordered) + 1):
        tokens = ordered[j - 1].num_tokens
        fewest[j], run_start[j] = fewest[j - 1] + tokens, j - 1
        shared = None
        for i in range(j - 2, -1, -1):  # the run ordered[i:j]
            shared = links[i] if shared is None else min(shared, links[i])
            if shared < min_shared:
                break
            tokens += ordered[i].num_tokens
            cost = fewest[i] + tokens - (j - i - 1) * shared
            if cost < fewest[j]:
                fewest[j], run_start[j] = cost, i
    groups, j = [], len(ordered)
    while j > 0:
        i = run_start[j]
        groups.append((min(links[i : j - 1], default=0), ordered[i:j]))
        j = i
    return groups[::-1]


def micro_batches(rows: list[TrainingRow], max_tokens: int, share_prefixes: bool = True
                  ) -> Iterator[tuple[int, list[TrainingRow]]]:
    """(shared, rows) passes of at most max_tokens computed positions: rows without a shared prefix are right-padded
    to the longest (rows x longest); after a shared prefix each row runs alone (shared + their remainders). A row
    longer than max_tokens goes alone."""
    def cost(shared: int, batch: list[TrainingRow]) -> int:
        if shared:
            return shared + sum(row.num_tokens - shared for row in batch)
        return len(batch) * batch[0].num_tokens

    groups = prefix_groups(rows) if share_prefixes else [(0, rows)]
    for shared, members in groups:
        batches: list[list[TrainingRow]] = [[]]
        for row in sorted(members, key=lambda r: r.num_tokens, reverse=True):
            if batches[-1] and cost(shared, batches[-1] + [row]) > max_tokens:
                batches.append([])
            batches[-1].append(row)
        for batch in batches:
            yield (shared if len(batch) > 1 else 0), batch
