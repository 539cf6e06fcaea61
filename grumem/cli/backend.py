"""Where a command's memory loops run: this process's engine, or a pool of Ray replicas (--replicas N > 1 or
--ray-address). Both take the same samples and return the same trajectories."""
import argparse
import importlib.util
from collections.abc import Callable

from tqdm.auto import tqdm

from grumem.agent import AgentConfig, MemoryAgent, Trajectory
from grumem.cli.common import engine_options, make_llm
from grumem.engine import LLM
from grumem.engine.models.registry import load_tokenizer
from grumem.tasks import Sample


def add_replica_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("scale-out (pip install grumem[ray])")
    g.add_argument("--replicas", type=int, default=1, help="engine replicas as Ray actors; 1: this process")
    g.add_argument("--ray-address", help="join an existing Ray cluster (default: start a local one)")
    g.add_argument("--cpus-per-replica", type=int, default=1, help="CPU cores (torch threads) of each replica")


def check_replica_args(args) -> None:
    if args.replicas < 1 or args.cpus_per_replica < 1:
        raise ValueError("--replicas and --cpus-per-replica must be >= 1")
    if uses_pool(args) and importlib.util.find_spec("ray") is None:
        raise ValueError("--replicas and --ray-address need Ray: pip install 'grumem[ray]'")


def uses_pool(args) -> bool:
    return getattr(args, "replicas", 1) > 1 or getattr(args, "ray_address", None) is not None


class LocalBackend:
    def __init__(self, llm: LLM):
        self.llm, self.tokenizer = llm, llm.tokenizer

    def run(self, config: AgentConfig, samples: list[Sample], progress: bool = False,
            on_finish: Callable[[Trajectory], None] | None = None) -> list[Trajectory]:
        return MemoryAgent(self.llm, config).run(samples, progress, on_finish)

    def tokens_processed(self) -> int:
        stats = self.llm.stats
        return stats.num_prefill_tokens + stats.num_decode_tokens


class PoolBackend:
    def __init__(self, args):
        from grumem.distributed import ReplicaPool

        self.pool = ReplicaPool(args.model, args.replicas, engine_options(args), args.cpus_per_replica,
                                address=args.ray_address)
        self.pool.watch_health()
        self.tokenizer = load_tokenizer(args.model)

    def run(self, config: AgentConfig, samples: list[Sample], progress: bool = False,
            on_finish: Callable[[Trajectory], None] | None = None) -> list[Trajectory]:
        with tqdm(total=len(samples), desc="documents", unit="doc", disable=not progress) as bar:
            def finished(trajectory: Trajectory) -> None:
                bar.update(1)
                if on_finish is not None:
                    on_finish(trajectory)

            try:
                return self.pool.run(samples, config, finished)
            except BaseException:
                self.pool.abort()  # Ctrl-C: the replicas stop reading what was in flight
                raise

    def tokens_processed(self) -> int:
        return sum(s["prefill_tokens"] + s["decode_tokens"] for s in self.pool.stats())


def make_backend(args):
    return PoolBackend(args) if uses_pool(args) else LocalBackend(make_llm(args))
