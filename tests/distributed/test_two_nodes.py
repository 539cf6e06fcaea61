"""Two replicas on two (faked) nodes: ray.cluster_utils.Cluster, in a process of its own so that it does not meet
the tests' shared local cluster."""
import subprocess
import sys

import pytest

pytest.importorskip("ray")

SCRIPT = """
import sys
import ray
from ray.cluster_utils import Cluster
from grumem.agent import AgentConfig
from grumem.distributed import ReplicaPool
from grumem.engine.models.registry import load_tokenizer
from grumem.tasks import make_samples

cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
cluster.add_node(num_cpus=1)
ray.init(address=cluster.address, log_to_driver=False)
pool = ReplicaPool(sys.argv[1], 2, {"num_kvcache_blocks": 128}, cpus_per_replica=1)
nodes = {s["node"] for s in pool.stats()}
samples = make_samples("niah_single_1", load_tokenizer(sys.argv[1]), 256, 2, seed=1)
trajectories = pool.run(samples, AgentConfig(chunk_tokens=128, memory_tokens=4, max_think_tokens=4, answer_tokens=4))
print("NODES", len(nodes), "ANSWERED", sum(t.error is None for t in trajectories))
pool.shutdown()
ray.shutdown()
cluster.shutdown()
"""


def test_replicas_on_two_nodes_answer(tiny_llama_path):
    done = subprocess.run([sys.executable, "-c", SCRIPT, tiny_llama_path], capture_output=True, text=True,
                          timeout=300)
    assert "NODES 2 ANSWERED 2" in done.stdout, done.stdout[-2000:] + done.stderr[-3000:]
