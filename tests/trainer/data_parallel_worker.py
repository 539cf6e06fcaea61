"""One rank of tests/trainer/test_data_parallel.py (a module of its own so that spawned processes can import it)."""
import pickle

import torch
import torch.distributed as dist

from grumem.engine import LLM
from grumem.trainer import DAPOTrainer
from grumem.trainer.data_parallel import DataParallel


def backward_on_rank(rank: int, world_size: int, init_file: str, checkpoint: str, job_file: str, out_file: str):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    torch.set_num_threads(1)
    try:
        with open(job_file, "rb") as f:
            agent_config, trainer_config, rows = pickle.load(f)
        trainer = DAPOTrainer(LLM(checkpoint, num_kvcache_blocks=256), agent_config, trainer_config,
                              data_parallel=DataParallel())
        trainer.policy.model.zero_grad(set_to_none=True)
        metrics = trainer.backward(rows)
        grads = {name: p.grad.clone() for name, p in trainer.policy.model.named_parameters()}
        with open(f"{out_file}.{rank}", "wb") as f:
            pickle.dump((metrics, grads), f)
    finally:
        dist.destroy_process_group()
