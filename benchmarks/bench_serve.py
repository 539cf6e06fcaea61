"""grumem serve side by side with offline MemoryAgent.run: the same document-QA requests, one engine, one run.

Systems (the prefix cache is flushed before each): offline `MemoryAgent.run` over all documents at once; the server
(`/v1/memory`) with --serve-clients concurrent clients; the server with one client sending the same requests one
after another. Then a load run: --serve-load-requests streamed requests from the concurrent clients, every tenth
client disconnecting after its first turn; all the others must be answered and nothing may stay held.

  .venv/bin/python -m pytest benchmarks/bench_serve.py -s
  (--serve-documents 64 --serve-lengths 4096,8192 --serve-clients 16 --serve-load-requests 200 --serve-load-length 2048)

Targets (issue 14): the server reaches >= 90% of the offline answers/s; 16 concurrent clients reach >= 3x the
answers/s of one client sending the requests one after another.
"""
import asyncio
import json
import statistics
import threading
import time

import httpx
import pytest

from grumem.agent import AgentConfig, MemoryAgent
from grumem.serve import bind, build_app, uvicorn_server
from grumem.tasks import make_samples

CONFIG = AgentConfig()  # grumem run's loop: gated, exit gate and gate prior on, chunk 1024, memory <= 256
RESULTS: dict[str, dict] = {}


@pytest.fixture(scope="module")
def server_url(grumem_llm):
    sock = bind("127.0.0.1", 0)
    server = uvicorn_server(build_app(grumem_llm, "smollm2-135m", max_queue=1024), "warning")
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    server.should_exit = True
    thread.join(timeout=30)


@pytest.fixture(scope="module")
def documents(grumem_llm, request):
    options = request.config.option
    lengths = [int(x) for x in options.serve_lengths.split(",")]
    per_length = options.serve_documents // len(lengths)
    return [s for length in lengths for s in make_samples("niah_single_1", grumem_llm.tokenizer, length, per_length)]


def body(sample, stream: bool = False) -> dict:
    return {"document_ids": sample.context_ids, "question": sample.question, "answers": sample.answers,
            "stream": stream}


def summarize(name: str, wall: float, latencies: list[float], correct: list[bool], cached: int) -> dict:
    latencies = sorted(latencies)
    result = {"wall_s": wall, "answers_per_s": len(correct) / wall, "p50_s": statistics.median(latencies),
              "p99_s": latencies[min(len(latencies) - 1, round(0.99 * (len(latencies) - 1)))],
              "accuracy": sum(correct) / len(correct), "cached_prompt_tokens": cached, "documents": len(correct)}
    RESULTS[name] = result
    return result


async def client_run(url: str, samples, clients: int) -> tuple[float, list[float], list[dict]]:
    """`clients` workers send the samples' requests as each one's previous answer arrives."""
    queue: asyncio.Queue = asyncio.Queue()
    for i, sample in enumerate(samples):
        queue.put_nowait((i, sample))
    results, latencies = [None] * len(samples), [0.0] * len(samples)

    async def worker(client):
        while not queue.empty():
            i, sample = queue.get_nowait()
            start = time.perf_counter()
            r = await client.post("/v1/memory", json=body(sample))
            latencies[i], results[i] = time.perf_counter() - start, r.json()

    start = time.perf_counter()
    async with httpx.AsyncClient(base_url=url, timeout=3600) as client:
        await asyncio.gather(*(worker(client) for _ in range(clients)))
    return time.perf_counter() - start, latencies, results


@pytest.mark.parametrize("system", ["offline", "server-concurrent", "server-one-client"])
def test_document_qa(benchmark, system, grumem_llm, server_url, documents, request):
    clients = request.config.option.serve_clients

    def run():
        grumem_llm.reset_prefix_cache()  # no system reads documents another one left in the cache
        if system == "offline":
            start = time.perf_counter()
            trajectories = MemoryAgent(grumem_llm, CONFIG).run(documents)
            wall = time.perf_counter() - start
            return summarize(system, wall, [t.seconds for t in trajectories], [t.score >= 1 for t in trajectories],
                             sum(turn.num_cached_tokens for t in trajectories for turn in t.turns))
        wall, latencies, results = asyncio.run(client_run(server_url, documents,
                                                          clients if system == "server-concurrent" else 1))
        assert all(r["error"] is None for r in results), [r["error"] for r in results if r["error"]]
        return summarize(system, wall, latencies, [r["correct"] for r in results],
                         sum(r["usage"]["cached"] for r in results))

    result = benchmark.pedantic(run, rounds=1, warmup_rounds=0)
    benchmark.extra_info.update(result)


def test_load_with_disconnects(benchmark, grumem_llm, server_url, request):
    """Streamed requests; every tenth disconnects after its first turn. All others answered, nothing held after."""
    options = request.config.option
    samples = make_samples("niah_single_1", grumem_llm.tokenizer, options.serve_load_length,
                           options.serve_load_requests, seed=1)

    async def load():
        outcomes = {}
        queue: asyncio.Queue = asyncio.Queue()
        for i, sample in enumerate(samples):
            queue.put_nowait((i, sample))

        async def worker(client):
            while not queue.empty():
                i, sample = queue.get_nowait()
                async with client.stream("POST", "/v1/memory", json=body(sample, stream=True)) as r:
                    async for line in r.aiter_lines():
                        if not line.startswith("data: {"):
                            continue
                        event = json.loads(line.removeprefix("data: "))
                        if i % 10 == 9:
                            outcomes[i] = "disconnected"
                            break  # leaving the block closes the connection mid-stream
                        if "result" in event:
                            outcomes[i] = "answered" if event["result"]["error"] is None else "error"

        start = time.perf_counter()
        async with httpx.AsyncClient(base_url=server_url, timeout=3600) as client:
            await asyncio.gather(*(worker(client) for _ in range(options.serve_clients)))
            wall = time.perf_counter() - start
            deadline = time.monotonic() + 30
            while True:  # the server notices the last disconnects within a poll or a step
                metrics = (await client.get("/metrics")).text
                held = _gauge(metrics, "grumem:num_requests_held")
                usage = _gauge(metrics, "grumem:kv_cache_usage_perc")
                if (held == 0 and usage == 0) or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.1)
        return wall, outcomes, held, usage

    wall, outcomes, held, usage = benchmark.pedantic(lambda: asyncio.run(load()), rounds=1, warmup_rounds=0)
    counts = {kind: sum(o == kind for o in outcomes.values()) for kind in ("answered", "disconnected", "error")}
    RESULTS["load"] = {"wall_s": wall, **counts, "requests": len(samples), "held_after": held,
                       "kv_usage_after": usage}
    benchmark.extra_info.update(RESULTS["load"])
    assert counts["answered"] == len(samples) - counts["disconnected"] and held == 0 and usage == 0


def _gauge(text: str, name: str) -> float:
    return float(next(line.split()[-1] for line in text.splitlines() if line.startswith(name + " ")))


@pytest.fixture(scope="module", autouse=True)
def print_summary():
    yield
    if not RESULTS:
        return
    print("\n\ngrumem serve vs offline MemoryAgent.run (same documents, one engine)")
    for name, r in RESULTS.items():
        if name == "load":
            print(f"{name:18s} {r['requests']} streamed requests in {r['wall_s']:.1f} s: {r['answered']} answered, "
                  f"{r['disconnected']} disconnected, {r['error']} errors; after: {r['held_after']:.0f} held, "
                  f"KV usage {r['kv_usage_after']:.3f}")
            continue
        print(f"{name:18s} {r['wall_s']:8.1f} s  {r['answers_per_s']:.3f} answers/s  p50 {r['p50_s']:.1f} s  "
              f"p99 {r['p99_s']:.1f} s  accuracy {r['accuracy']:.2f}  cached prompt tokens "
              f"{r['cached_prompt_tokens']}  ({r['documents']} documents)")
    offline, concurrent, one = (RESULTS.get(k) for k in ("offline", "server-concurrent", "server-one-client"))
    if offline and concurrent:
        print(f"server / offline answers/s: {concurrent['answers_per_s'] / offline['answers_per_s']:.2f} "
              "(target >= 0.90)")
    if concurrent and one:
        print(f"concurrent / one client answers/s: {concurrent['answers_per_s'] / one['answers_per_s']:.2f} "
              "(target >= 3)")
