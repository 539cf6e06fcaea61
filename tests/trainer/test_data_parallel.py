"""Data-parallel training passes (gloo, 2 ranks, fp32) give the gradient and metrics of one process."""
import pickle

import torch
import torch.multiprocessing as mp

from data_parallel_worker import backward_on_rank
from grumem.engine import LLM
from grumem.trainer import DAPOTrainer, TrainerConfig
from test_dapo import AGENT, rollout_rows


def test_two_ranks_give_the_single_process_gradient(tiny_llama_path, tmp_path):
    llm = LLM(tiny_llama_path, num_kvcache_blocks=512)
    config = TrainerConfig(group_size=3, groups_per_step=2)
    trainer = DAPOTrainer(llm, AGENT, config)
    rows = [row for _, rows in rollout_rows(llm) for row in rows]
    trainer.fill_old_logprobs(rows)
    for row in rows:  # off-policy by a little, so the clip takes part
        row.old_logprobs = [v + 0.3 * (-1) ** i for i, v in enumerate(row.old_logprobs)]
    trainer.policy.model.zero_grad(set_to_none=True)
    single_metrics = trainer.backward(rows)
    single = {name: p.grad.clone() for name, p in trainer.policy.model.named_parameters()}

    job = tmp_path / "job.pkl"
    job.write_bytes(pickle.dumps((AGENT, config, rows)))
    out = tmp_path / "grads"
    mp.spawn(backward_on_rank, args=(2, str(tmp_path / "init"), tiny_llama_path, str(job), str(out)), nprocs=2)
    for rank in range(2):
        metrics, grads = pickle.loads((tmp_path / f"grads.{rank}").read_bytes())
        for name, grad in single.items():
            torch.testing.assert_close(grads[name], grad, atol=1e-6, rtol=1e-4)
        for name in single_metrics:
            assert abs(metrics[name] - single_metrics[name]) < 1e-5
    assert any(g.abs().max() > 0 for g in single.values())
