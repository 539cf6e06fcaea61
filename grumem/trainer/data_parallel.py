"""Data-parallel training passes over torch.distributed (gloo on the CPU, nccl on GPUs).

Every rank holds the same rows of a mini-batch; each computes the gradient of its share (rows rank, rank + W, ...)
normalised by the whole mini-batch's loss tokens, and a SUM all-reduce makes every rank's gradient the one a
single process computes over all the rows, so the optimizer steps stay identical across ranks.
"""
import torch
import torch.distributed as dist


class DataParallel:
    def __init__(self, group: dist.ProcessGroup | None = None):
        """Over an initialised process group (torch.distributed.init_process_group; None: the default one)."""
        if not dist.is_initialized():
            raise RuntimeError("DataParallel needs torch.distributed.init_process_group first")
        self.group = group
        self.rank, self.world_size = dist.get_rank(group), dist.get_world_size(group)

    def share(self, rows: list) -> list:
        return rows[self.rank :: self.world_size]

    def all_reduce_gradients(self, parameters) -> None:
        """Sums the gradients over the ranks in one flat all-reduce (a rank without rows contributes zeros)."""
        params = [p for p in parameters if p.requires_grad]
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1).float() for g in grads])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=self.group)
        offset = 0
        for p, g in zip(params, grads):
            p.grad = flat[offset : offset + g.numel()].view_as(g).to(g.dtype)
            offset += g.numel()

    def all_reduce_metrics(self, metrics: dict[str, float]) -> dict[str, float]:
        names = sorted(metrics)
        values = torch.tensor([metrics[n] for n in names], dtype=torch.float64)
        dist.all_reduce(values, op=dist.ReduceOp.SUM, group=self.group)
        return dict(zip(names, values.tolist()))
