"""Data-parallel replicas side by side: the same NIAH questions through a ReplicaPool of one replica x one thread and
of two replicas x one thread each, in one run (grumem run's loop: gated, exit gate and gate prior on).

  .venv/bin/python -m pytest benchmarks/bench_replicas.py -s   (--replica-questions 16 --replica-length 4096)

Each pool reads one warm-up document before it is timed (its first steps build the engine's caches). Target
(issue 15): two replicas reach >= 1.7x the answers/s of one.
"""
import time

import pytest

from grumem.agent import AgentConfig
from grumem.engine.models.registry import DEFAULT_MODEL, load_tokenizer
from grumem.tasks import make_samples

ray = pytest.importorskip("ray")
from grumem.distributed import ReplicaPool  # noqa: E402  (after the skip: Ray is an optional extra)

CONFIG = AgentConfig()
RESULTS: dict[int, dict] = {}


@pytest.fixture(scope="module")
def ray_cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def questions(request):
    options = request.config.option
    tokenizer = load_tokenizer(DEFAULT_MODEL)
    warm_up = make_samples("niah_single_1", tokenizer, options.replica_length, 1, seed=1)[0]
    return warm_up, make_samples("niah_single_1", tokenizer, options.replica_length, options.replica_questions)


@pytest.mark.parametrize("num_replicas", [1, 2])
def test_replicas(benchmark, ray_cluster, questions, num_replicas):
    warm_up, samples = questions
    pool = ReplicaPool(DEFAULT_MODEL, num_replicas, cpus_per_replica=1)
    try:
        pool.run([warm_up] * num_replicas, CONFIG)

        def run():
            start = time.perf_counter()
            trajectories = pool.run(samples, CONFIG)
            wall = time.perf_counter() - start
            return {"wall_s": wall, "answers_per_s": len(samples) / wall, "documents": len(samples),
                    "accuracy": sum(t.score >= 1 for t in trajectories) / len(samples),
                    "errors": sum(t.error is not None for t in trajectories),
                    "decode_tokens": sum(s["decode_tokens"] for s in pool.stats())}

        result = benchmark.pedantic(run, rounds=1, warmup_rounds=0)
    finally:
        pool.shutdown()
    RESULTS[num_replicas] = result
    benchmark.extra_info.update(result)
    assert result["errors"] == 0


@pytest.fixture(scope="module", autouse=True)
def print_summary():
    yield
    if not RESULTS:
        return
    print("\n\nReplicaPool, one thread per replica (same questions, one run)")
    for n, r in RESULTS.items():
        print(f"{n} replica{'s' if n > 1 else ' '} {r['wall_s']:8.1f} s  {r['answers_per_s']:.3f} answers/s  "
              f"accuracy {r['accuracy']:.2f}  ({r['documents']} documents)")
    if 1 in RESULTS and 2 in RESULTS:
        print(f"2 / 1 replicas answers/s: {RESULTS[2]['answers_per_s'] / RESULTS[1]['answers_per_s']:.2f} "
              "(target >= 1.7)")
