"""ReplicaPool: data-parallel engine replicas (Ray actors in one placement group) behind one router.

The router sends each request to the healthy replica with the fewest outstanding requests; a memory-loop document
runs on one replica from its first turn to its answer (its prefix cache), and control calls fan out to all.
Replicas restart when they die (max_restarts); a document whose replica died is resubmitted from its last
finished turn, so no document is lost or answered twice. A replica that does not answer a health check in time is
taken out of the router until it answers again (check_health, or every few seconds with watch_health).
"""
import asyncio
import itertools
import logging
import threading
from collections.abc import Callable

import ray
from ray.exceptions import GetTimeoutError, RayActorError
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from grumem.agent import AgentConfig, Trajectory
from grumem.distributed.replica import CONCURRENCY_GROUPS, EngineReplica
from grumem.engine import RequestOutput, SamplingParams
from grumem.tasks import Sample

log = logging.getLogger("grumem.distributed")

MAX_RESUBMITS = 3  # per document: a document that kills its replica every time is failed, not retried forever


class ReplicaPool:
    def __init__(self, model: str, num_replicas: int, engine_options: dict | None = None,
                 cpus_per_replica: int = 1, gpus_per_replica: float = 0, address: str | None = None,
                 health_timeout_s: float = 10.0):
        if num_replicas < 1:
            raise ValueError(f"num_replicas must be >= 1, got {num_replicas}")
        if not ray.is_initialized():
            ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
        bundle = {"CPU": cpus_per_replica, **({"GPU": gpus_per_replica} if gpus_per_replica else {})}
        self.placement = placement_group([bundle] * num_replicas, strategy="PACK")
        ray.get(self.placement.ready(), timeout=300)
        actor = ray.remote(concurrency_groups=CONCURRENCY_GROUPS)(EngineReplica)
        self.replicas = [actor.options(
            num_cpus=cpus_per_replica, num_gpus=gpus_per_replica, max_restarts=-1, max_task_retries=0,
            scheduling_strategy=PlacementGroupSchedulingStrategy(self.placement, placement_group_bundle_index=i),
        ).remote(model, engine_options or {}, cpus_per_replica) for i in range(num_replicas)]
        self.outstanding = [0] * num_replicas
        self.healthy = set(range(num_replicas))
        self.health_timeout_s = health_timeout_s
        self.weight_version = 0
        self._weights = None  # the object-store ref of the weights served since the last update_weights
        self._recovering: dict[int, asyncio.Task] = {}
        self._ids = itertools.count()
        self._watching: threading.Event | None = None  # set to stop the health-check thread
        ray.get([r.ping.remote() for r in self.replicas], timeout=300)

    # --- routing --------------------------------------------------------------------------------------------
    def pick(self) -> int:
        """The healthy replica with the fewest outstanding requests (every replica when none answered lately)."""
        candidates = self.healthy or set(range(len(self.replicas)))
        return min(candidates, key=lambda i: (self.outstanding[i], i))

    def check_health(self) -> set[int]:
        """Pings every replica; those that do not answer within health_timeout_s leave the router."""
        pings = {i: r.ping.remote() for i, r in enumerate(self.replicas)}
        healthy = set()
        for i, ref in pings.items():
            try:
                ray.get(ref, timeout=self.health_timeout_s)
                healthy.add(i)
            except (GetTimeoutError, RayActorError):
                pass
        self.healthy = healthy - {i for i, task in self._recovering.items() if not task.done()}  # not on old weights
        return self.healthy

    def watch_health(self, interval_s: float = 10.0) -> None:
        """Checks health every interval_s seconds in a background thread until shutdown (once started, later calls
        do nothing)."""
        if self._watching is not None:
            return
        self._watching = stop = threading.Event()

        def watch():
            while not stop.wait(interval_s):
                try:
                    self.check_health()
                except Exception:
                    log.exception("the replicas' health check failed")

        threading.Thread(target=watch, name="grumem-health", daemon=True).start()

    # --- requests -------------------------------------------------------------------------------------------
    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[RequestOutput]:
        return asyncio.run(self.agenerate(prompts, params))

    async def agenerate(self, prompts: list[list[int]], params: SamplingParams) -> list[RequestOutput]:
        async def one(prompt):
            i = self.pick()
            self.outstanding[i] += 1
            try:
                return await self.replicas[i].generate.remote(f"pool-{next(self._ids)}", prompt, params)
            finally:
                self.outstanding[i] -= 1

        return list(await asyncio.gather(*(one(p) for p in prompts)))

    def run(self, samples: list[Sample], config: AgentConfig,
            on_finish: Callable[[Trajectory], None] | None = None) -> list[Trajectory]:
        """MemoryAgent.run across the replicas: one trajectory per sample, in order."""
        return asyncio.run(self.arun(samples, config, on_finish))

    async def arun(self, samples: list[Sample], config: AgentConfig,
                   on_finish: Callable[[Trajectory], None] | None = None) -> list[Trajectory]:
        async def one(index: int, sample: Sample) -> Trajectory:
            trajectory = await self.read(sample, config)
            trajectory.sample_index = index
            if on_finish is not None:
                on_finish(trajectory)
            return trajectory

        return list(await asyncio.gather(*(one(i, s) for i, s in enumerate(samples))))

    async def read(self, sample: Sample, config: AgentConfig) -> Trajectory:
        """One document through the memory loop on one replica; resubmitted from its last finished turn when the
        replica dies under it."""
        partial = None
        for attempt in range(MAX_RESUBMITS + 1):
            i = self.pick()
            self.outstanding[i] += 1
            turns = list(partial.memory_turns) if partial is not None else []
            try:
                async for ref in self.replicas[i].memory.remote(f"pool-{next(self._ids)}", sample, config, partial):
                    item = await ref
                    if isinstance(item, Trajectory):
                        return item
                    if item.kind == "memory":
                        turns.append(item)
            except RayActorError:
                partial = Trajectory(0, turns=turns)
                await self._recover(i)
            finally:
                self.outstanding[i] -= 1
        trajectory = Trajectory(0, turns=turns)
        trajectory.error = f"the document's replica died {MAX_RESUBMITS + 1} times while reading it"
        return trajectory

    def rollout(self, samples: list[Sample], config: AgentConfig, group_size: int, temperature: float = 1.0,
                top_p: float = 1.0, seed: int = 0) -> list[list[Trajectory]]:
        """MemoryAgent.rollout across the replicas: each sample's group on one replica (its first turn's prefill is
        shared by the group), with the seeds a single engine would give it."""
        return asyncio.run(self.arollout(samples, config, group_size, temperature, top_p, seed))

    async def arollout(self, samples, config, group_size, temperature=1.0, top_p=1.0, seed=0):
        async def one(index: int, sample: Sample) -> list[Trajectory]:
            i = self.pick()
            self.outstanding[i] += 1
            try:
                groups = await self.replicas[i].rollout.remote(f"pool-{next(self._ids)}", [sample], [index], config,
                                                               group_size, temperature, top_p, seed)
                return groups[0]
            finally:
                self.outstanding[i] -= 1

        return list(await asyncio.gather(*(one(i, s) for i, s in enumerate(samples))))

    async def _recover(self, i: int) -> None:
        """Waits for Ray to restart replica i and gives it the weights the others serve (it starts from the
        checkpoint); concurrent callers share one recovery."""
        task = self._recovering.get(i)
        if task is None or task.done():
            task = self._recovering[i] = asyncio.ensure_future(self._restore(i))
        await task

    async def _restore(self, i: int) -> None:
        replica = self.replicas[i]
        self.healthy.discard(i)  # nothing new goes there until it serves the current weights
        for _ in range(600):
            try:
                await replica.ping.remote()
                break
            except RayActorError:
                await asyncio.sleep(0.5)
        if self._weights is not None:
            await replica.update_weights.remote(self._weights, self.weight_version)
        self.healthy.add(i)

    # --- control, to every replica --------------------------------------------------------------------------
    def abort(self, rid: str | None = None) -> int:
        return sum(ray.get([r.abort.remote(rid) for r in self.replicas]))

    def pause(self) -> None:
        ray.get([r.set_paused.remote(True) for r in self.replicas])

    def resume(self) -> None:
        ray.get([r.set_paused.remote(False) for r in self.replicas])

    def flush(self) -> None:
        ray.get([r.flush.remote() for r in self.replicas])

    def update_weights(self, named_tensors) -> int:
        """The new weights on every replica (through Ray's object store, put once); returns the new version."""
        self.weight_version += 1
        self._weights = ray.put([(name, tensor.detach().cpu()) for name, tensor in named_tensors])
        ray.get([r.update_weights.remote(self._weights, self.weight_version) for r in self.replicas])
        return self.weight_version

    def stats(self) -> list[dict]:
        return ray.get([r.stats.remote() for r in self.replicas])

    def shutdown(self) -> None:
        if self._watching is not None:
            self._watching.set()
        for replica in self.replicas:
            ray.kill(replica, no_restart=True)
        remove_placement_group(self.placement)

