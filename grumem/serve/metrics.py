"""Prometheus metrics of the server (`GET /metrics`), named as vLLM names its own where one exists.

Engine numbers (requests running and waiting, KV-cache usage, token and prefix-cache counters) are read from the
engine when scraped; latencies and memory-loop outcomes are recorded as requests finish.
"""
from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from grumem.agent import Trajectory
from grumem.engine import LLM, RequestOutput

disable_created_metrics()  # the *_created series only clutter a scrape
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 60, 120, 300)


class _EngineCollector:
    def __init__(self, llm: LLM, held):
        self.llm, self.held = llm, held

    def collect(self):
        load, stats = self.llm.load(), self.llm.stats
        gauges = {
            "grumem:num_requests_running": ("sequences in the decode batch", load.num_running),
            "grumem:num_requests_waiting": ("sequences waiting for prefill", load.num_waiting),
            "grumem:num_requests_held": ("client requests and memory runs the server holds", self.held()),
            "grumem:kv_cache_usage_perc": ("fraction of KV blocks in use", load.num_blocks_used / load.num_blocks),
        }
        for name, (doc, value) in gauges.items():
            yield GaugeMetricFamily(name, doc, value=value)
        counters = {
            "grumem:prompt_tokens": ("prompt tokens computed in prefill", stats.num_prefill_tokens),
            "grumem:generation_tokens": ("tokens generated", stats.num_generated_tokens),
            "grumem:prefix_cache_queries": ("prompt tokens looked up in the prefix cache", stats.num_queried_tokens),
            "grumem:prefix_cache_hits": ("prompt tokens served by the prefix cache", stats.num_cached_tokens),
            "grumem:num_preemptions": ("sequences preempted", stats.num_preemptions),
        }
        for name, (doc, value) in counters.items():
            yield CounterMetricFamily(name, doc, value=value)


class ServerMetrics:
    def __init__(self, llm: LLM, held):
        """`held`: a callable giving the client requests the server holds now."""
        self.registry = CollectorRegistry()
        self.registry.register(_EngineCollector(llm, held))
        r = self.registry
        self.ttft = Histogram("grumem:time_to_first_token_seconds", "from arrival to the first token",
                              buckets=LATENCY_BUCKETS, registry=r)
        self.itl = Histogram("grumem:inter_token_latency_seconds", "mean time between output tokens of a request",
                             buckets=LATENCY_BUCKETS, registry=r)
        self.e2e = Histogram("grumem:e2e_request_latency_seconds", "from arrival to finish",
                             buckets=LATENCY_BUCKETS, registry=r)
        self.finished = Counter("grumem:request_success", "engine requests finished", ["finished_reason"],
                                registry=r)
        self.turns = Counter("grumem:memory_turns", "memory-loop turns", ["kind"], registry=r)
        self.gates = Counter("grumem:gate_decisions", "gate values written by memory turns", ["gate", "value"],
                             registry=r)
        self.documents = Counter("grumem:memory_documents", "memory-loop documents finished", ["outcome"],
                                 registry=r)
        self.early_exits = Counter("grumem:memory_early_exits", "documents that stopped reading before their last "
                                   "chunk (the exit gate)", registry=r)

    def observe_outputs(self, outputs: list[RequestOutput]) -> None:
        """Every engine request a step finished (plain ones and memory-loop turns)."""
        for output in outputs:
            times = output.times
            reason = "error" if output.error else output.outputs[0].finish_reason if output.outputs else "error"
            self.finished.labels(reason).inc()
            if times is None or times.finished is None:
                continue
            self.e2e.observe(times.finished - times.arrival)
            if times.first_token is not None:
                self.ttft.observe(times.first_token - times.arrival)
                num_tokens = max(len(c.token_ids) for c in output.outputs)
                if num_tokens > 1:
                    self.itl.observe((times.finished - times.first_token) / (num_tokens - 1))

    def observe_trajectory(self, trajectory: Trajectory) -> None:
        for turn in trajectory.turns:
            self.turns.labels(turn.kind).inc()
            for gate, value in (("check", turn.check), ("next", turn.next)):
                if value is not None:
                    self.gates.labels(gate, value).inc()
        outcome = "aborted" if trajectory.aborted else "error" if trajectory.error else "answered"
        self.documents.labels(outcome).inc()
        num_chunks = trajectory.num_chunks  # None: a file left before its end
        if trajectory.error is None and 0 <= trajectory.stop_chunk and (num_chunks is None
                                                                        or trajectory.stop_chunk < num_chunks - 1):
            self.early_exits.inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
