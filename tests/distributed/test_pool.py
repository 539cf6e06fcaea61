"""ReplicaPool on a local Ray cluster: two replicas of a tiny model, one thread each."""
import threading
import time

import pytest
import ray

from grumem.agent import AgentConfig, MemoryAgent
from grumem.engine import LLM, SamplingParams
from grumem.tasks import make_samples

CONFIG = AgentConfig(chunk_tokens=128, memory_tokens=8, max_think_tokens=6, answer_tokens=8)


@pytest.fixture(scope="module")
def offline(tiny_llama_path):
    return LLM(tiny_llama_path, num_kvcache_blocks=256, max_num_seqs=8)


def test_the_router_picks_the_least_loaded_healthy_replica(pool):
    saved = list(pool.outstanding), set(pool.healthy)
    try:
        pool.outstanding[:] = [3, 1]
        assert pool.pick() == 1
        pool.outstanding[:] = [0, 1]
        assert pool.pick() == 0
        pool.healthy = {1}
        assert pool.pick() == 1
    finally:
        pool.outstanding[:], pool.healthy = saved


def test_documents_spread_over_the_replicas_and_equal_a_local_run(pool, offline):
    samples = make_samples("niah_single_1", offline.tokenizer, 512, 4, seed=3)
    before = pool.stats()
    trajectories = pool.run(samples, CONFIG)
    local = MemoryAgent(offline, CONFIG).run(samples)
    assert [t.answer for t in trajectories] == [t.answer for t in local]
    assert [[(r.check, r.memory_ids) for r in t.memory_turns] for t in trajectories] == [
        [(r.check, r.memory_ids) for r in t.memory_turns] for t in local]
    after = pool.stats()
    assert all(a["prefill_tokens"] > b["prefill_tokens"] for a, b in zip(after, before))  # both replicas read
    assert all(a["cached_tokens"] > b["cached_tokens"] for a, b in zip(after, before))  # turns hit their prefixes


def test_generate_equals_the_offline_engine(pool, offline):
    prompts = [[1, 2, 3], [4, 5, 6, 7], [8, 9]]
    params = SamplingParams(temperature=0.7, max_tokens=6, seed=2)
    outputs = pool.generate(prompts, params)
    expected = offline.generate(prompts, params)
    assert [o.outputs[0].token_ids for o in outputs] == [e.outputs[0].token_ids for e in expected]


def run_held(pool, samples) -> tuple[threading.Thread, list]:
    """pool.run in a thread while the pool is paused, once every document is held by a replica (still paused)."""
    pool.pause()
    result = []
    thread = threading.Thread(target=lambda: result.extend(pool.run(samples, CONFIG)))
    thread.start()
    deadline = time.monotonic() + 30
    while sum(s["held"] for s in pool.stats()) < len(samples):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return thread, result


def test_abort_fans_out_to_every_replica(pool, offline):
    samples = make_samples("niah_single_1", offline.tokenizer, 512, 2, seed=4)
    try:
        thread, result = run_held(pool, samples)
        assert [s["held"] for s in pool.stats()] == [1, 1]  # one document on each replica
        assert pool.abort() == 2
    finally:
        pool.resume()
        thread.join(timeout=60)
    assert all(t.aborted for t in result)
    assert all(s["held"] == 0 and s["blocks_used"] == 0 for s in pool.stats())


def test_update_weights_reaches_every_replica_with_its_version(pool, offline, tiny_llama_path):
    from safetensors.torch import load_file

    weights = load_file(f"{tiny_llama_path}/model.safetensors")
    scaled = [(k, v * 1.5 if k == "lm_head.weight" else v) for k, v in weights.items()]
    version = pool.update_weights(scaled)
    try:
        assert [s["weight_version"] for s in pool.stats()] == [version] * 2
        prompts = [[3, 1, 4], [1, 5, 9]]
        params = SamplingParams(temperature=0, max_tokens=6)
        offline.update_weights(scaled)
        assert [o.outputs[0].token_ids for o in pool.generate(prompts, params)] == [
            e.outputs[0].token_ids for e in offline.generate(prompts, params)]
    finally:
        pool.update_weights(list(weights.items()))
        offline.update_weights(list(weights.items()))


def test_rollouts_from_the_pool_equal_local_rollouts(pool, offline):
    samples = make_samples("niah_single_1", offline.tokenizer, 512, 3, seed=12)
    groups = pool.rollout(samples, CONFIG, group_size=3, temperature=1.0, seed=7)
    local = MemoryAgent(offline, CONFIG).rollout(samples, 3, temperature=1.0, seed=7)
    assert [[(t.sample_index, t.group_index) for t in g] for g in groups] == [
        [(t.sample_index, t.group_index) for t in g] for g in local]
    assert [[[r.output_ids for r in t.turns] for t in g] for g in groups] == [
        [[r.output_ids for r in t.turns] for t in g] for g in local]


def test_the_trainer_rolls_out_from_the_pool_and_every_replica_serves_its_update(pool, offline):
    from grumem.trainer import DAPOTrainer, TrainerConfig

    agent = AgentConfig(chunk_tokens=128, memory_tokens=8, max_think_tokens=4, answer_tokens=4,
                        gate_prior_threshold=None)
    trainer = DAPOTrainer(offline, agent, TrainerConfig(group_size=4, groups_per_step=2, lr=1e-2), pool=pool)
    version = pool.weight_version
    stats = trainer.step(iter(make_samples("niah_single_1", offline.tokenizer, 512, 8, seed=2)))
    assert stats["rows"] > 0 and pool.weight_version == version + 1
    assert [s["weight_version"] for s in pool.stats()] == [version + 1] * 2
    params = SamplingParams(temperature=0, max_tokens=6)
    prompts = [[2, 7, 1], [8, 2, 8]]
    assert [o.outputs[0].token_ids for o in pool.generate(prompts, params)] == [
        e.outputs[0].token_ids for e in offline.generate(prompts, params)]  # the trainer pushed to both


def test_a_killed_replica_restarts_and_its_documents_resume(pool, offline):
    """Replica 0 is killed mid-run: Ray restarts it, its documents go on from their last finished turn, and every
    document is answered exactly once, as a run without the kill answers it."""
    samples = make_samples("niah_single_1", offline.tokenizer, 1024, 4, seed=9)
    pids = [s["pid"] for s in pool.stats()]
    try:
        thread, result = run_held(pool, samples)
    finally:
        pool.resume()
    time.sleep(0.5)  # some turns finish first
    ray.kill(pool.replicas[0], no_restart=False)
    thread.join(timeout=120)
    assert len(result) == 4 and all(t.error is None for t in result)
    local = MemoryAgent(offline, CONFIG).run(samples)
    assert [t.answer for t in result] == [t.answer for t in local]
    assert [len(t.memory_turns) for t in result] == [len(t.memory_turns) for t in local]
    assert pool.stats()[0]["pid"] != pids[0]  # restarted


def test_a_replica_that_stops_answering_leaves_the_router(pool):
    """Last in this module: the replica stays dead. (Replica 0 was restarted above: it may take a while to answer.)
    The background check finds it without being asked."""
    deadline = time.monotonic() + 60
    while pool.check_health() != {0, 1}:
        assert time.monotonic() < deadline, "the replicas did not both come back"
    pool.watch_health(interval_s=0.2)
    ray.kill(pool.replicas[1], no_restart=True)
    deadline = time.monotonic() + 60
    while pool.healthy != {0}:
        assert time.monotonic() < deadline, "the health check did not take the dead replica out"
        time.sleep(0.1)
    pool.outstanding[:] = [5, 0]
    assert pool.pick() == 0
