"""One local Ray cluster (two CPUs) for all the distributed tests, and a pool of two tiny-model replicas."""
import pytest

ray = pytest.importorskip("ray")


@pytest.fixture(scope="session")
def ray_cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def pool(ray_cluster, tiny_llama_path):
    from grumem.distributed import ReplicaPool

    pool = ReplicaPool(tiny_llama_path, 2, {"num_kvcache_blocks": 256, "max_num_seqs": 8}, cpus_per_replica=1,
                       health_timeout_s=30)
    yield pool
    pool.shutdown()
