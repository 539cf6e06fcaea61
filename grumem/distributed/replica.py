"""EngineReplica: one engine in a Ray actor, over the same EngineLoop the HTTP server uses.

The actor is async: many calls in flight on one replica share its continuous batch (the engine thread steps them
together). Control calls (abort, pause, resume, weights, flush, stats, ping) run in a concurrency group of their
own, so they never wait behind generation.
"""
import os

import ray
import torch

from grumem.agent import AgentConfig, MemoryAgent, Trajectory, TurnFormat
from grumem.engine import LLM, RequestOutput, SamplingParams
from grumem.serve.engine_loop import EngineLoop
from grumem.tasks import Sample

CONTROL = "control"
CONCURRENCY_GROUPS = {CONTROL: 4}
MAX_REQUESTS = 1 << 20  # the pool bounds what it sends; the replica never refuses


class EngineReplica:
    def __init__(self, model: str, engine_options: dict, num_threads: int):
        torch.set_num_threads(num_threads)
        self.llm = LLM(model, **engine_options)
        TurnFormat.of(self.llm)
        self.loop = EngineLoop(self.llm, MAX_REQUESTS)
        self.agents: dict[str, MemoryAgent] = {}

    async def generate(self, rid: str, prompt_ids: list[int], params: SamplingParams) -> RequestOutput:
        (stream,) = self.loop.generate(rid, [prompt_ids], params)
        return await stream.final()

    async def memory(self, rid: str, sample: Sample, config: AgentConfig,
                     resume: Trajectory | None = None):
        """The memory loop over one document, as a stream: each turn's record as it finishes, the trajectory last
        (so that the pool can resume it on another replica from its last finished turn)."""
        stream = self.loop.memory(rid, lambda on_turn: self._agent(config).new_run(
            [sample], on_turn=on_turn, resume=[resume]))
        async for final, payload in stream.events():
            if final:
                if isinstance(payload, Exception):
                    raise payload
                yield payload[0][0]
            elif payload is not None:
                _, trajectory, record = payload
                yield record

    async def rollout(self, rid: str, samples: list[Sample], indices: list[int], config: AgentConfig,
                      group_size: int, temperature: float, top_p: float, seed: int) -> list[list[Trajectory]]:
        """MemoryAgent.rollout of these samples (at `indices` of the whole batch) on this replica."""
        stream = self.loop.memory(rid, lambda on_turn: self._agent(config).new_rollout(
            samples, group_size, temperature, top_p, seed, indices))
        payload = await stream.final()
        if isinstance(payload, Exception):
            raise payload
        return payload

    def _agent(self, config: AgentConfig) -> MemoryAgent:
        key = repr(config)
        if key not in self.agents:
            self.agents[key] = MemoryAgent(self.llm, config)
        return self.agents[key]

    # --- control --------------------------------------------------------------------------------------------
    @ray.method(concurrency_group=CONTROL)
    async def abort(self, rid: str | None = None) -> int:
        return await self.loop.abort(rid)

    @ray.method(concurrency_group=CONTROL)
    async def set_paused(self, paused: bool) -> None:
        def set_paused():
            self.loop.paused = paused

        await self.loop.call(set_paused)

    @ray.method(concurrency_group=CONTROL)
    async def update_weights(self, named_tensors: list[tuple[str, torch.Tensor]], version: int) -> int:
        """New weights (checkpoint names), once no request is in flight; returns the version now served."""
        def update():
            self.llm.update_weights(named_tensors)
            self.loop.weight_version = version
            return version

        return await self.loop.call(update)

    @ray.method(concurrency_group=CONTROL)
    async def flush(self) -> None:
        await self.loop.call(self.llm.reset_prefix_cache)

    @ray.method(concurrency_group=CONTROL)
    async def stats(self) -> dict:
        def read():
            load, stats = self.llm.load(), self.llm.stats
            return {"pid": os.getpid(), "node": ray.get_runtime_context().get_node_id(),
                    "weight_version": self.loop.weight_version, "held": self.loop.num_held,
                    "running": load.num_running, "waiting": load.num_waiting, "blocks_used": load.num_blocks_used,
                    "prefill_tokens": stats.num_prefill_tokens, "decode_tokens": stats.num_decode_tokens,
                    "cached_tokens": stats.num_cached_tokens}

        return await self.loop.call(read)

    @ray.method(concurrency_group=CONTROL)
    async def ping(self) -> int:
        return os.getpid()
