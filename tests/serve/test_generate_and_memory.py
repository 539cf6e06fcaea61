"""/generate (SGLang's shape, for RL) and /v1/memory (the memory loop) against a real server: both equal the
offline engine and MemoryAgent.run on the same weights."""
import concurrent.futures
import json

import httpx
import pytest

from grumem.agent import AgentConfig, FormatArgs, MemoryAgent, TurnFormat
from grumem.engine import SamplingParams, TokenRole
from grumem.tasks import make_samples

LOOP = dict(chunk_tokens=128, memory_tokens=8, max_think_tokens=6, answer_tokens=8)


def test_generate_logprobs_equal_the_offline_engine(tiny_server, offline_llm):
    prompt = list(range(100, 140))
    sampling = {"max_new_tokens": 12, "temperature": 0.8, "top_p": 0.9, "seed": 11}
    r = tiny_server.client.post("/generate", json={"input_ids": prompt, "sampling_params": sampling,
                                                   "return_logprob": True, "rid": "rl-1"})
    assert r.status_code == 200, r.text
    body = r.json()
    offline = offline_llm.generate([prompt], SamplingParams(temperature=0.8, top_p=0.9, max_tokens=12, seed=11))
    completion = offline[0].outputs[0]
    assert body["output_ids"] == completion.token_ids
    assert [lp for lp, _, _ in body["meta_info"]["output_token_logprobs"]] == completion.logprobs
    assert body["meta_info"]["id"] == "rl-1" and body["meta_info"]["finish_reason"] == {"type": "length"}
    assert body["meta_info"]["weight_version"] == int(r.headers["x-weight-version"])


@pytest.mark.parametrize("quote", [None, list(range(200, 230))])
def test_generate_under_the_gate_constraint_reports_roles_and_gates(tiny_server, offline_llm, quote):
    prompt = list(range(200, 230))
    constraint = {"mode": "format", "max_think_tokens": 3, "max_memory_tokens": 3, "quote": quote}
    r = tiny_server.client.post("/generate", json={"input_ids": prompt, "sampling_params": {
        "max_new_tokens": 64, "temperature": 0, "gate_constraint": constraint}})
    meta = r.json()["meta_info"]
    TurnFormat.of(offline_llm)
    args = FormatArgs(**{**constraint, "quote": None if quote is None else tuple(quote)})
    params = SamplingParams(temperature=0, max_tokens=64, logits_processors={TurnFormat.name: args})
    completion = offline_llm.generate([prompt], params)[0].outputs[0]
    assert r.json()["output_ids"] == completion.token_ids
    assert meta["token_roles"] == completion.roles and TokenRole.FORCED in meta["token_roles"]
    assert meta["gates"] == completion.extra[TurnFormat.name] and set(meta["gates"]) == {"check", "next"}


def niah_document(tokenizer, seed: int):
    return make_samples("niah_single_1", tokenizer, 512, 1, seed=seed)[0]


def memory_body(sample, **extra) -> dict:
    return {"document_ids": sample.context_ids, "question": sample.question, "answers": sample.answers,
            **LOOP, **extra}


def test_memory_equals_memory_agent_run(tiny_server, offline_llm):
    sample = niah_document(offline_llm.tokenizer, seed=5)
    r = tiny_server.client.post("/v1/memory", json=memory_body(sample))
    assert r.status_code == 200, r.text
    result = r.json()
    trajectory = MemoryAgent(offline_llm, AgentConfig(**LOOP)).run([sample])[0]
    assert result["answer"] == trajectory.answer and result["error"] is None
    assert [t["kind"] for t in result["turns"]] == [t.kind for t in trajectory.turns]
    memory_turns = [t for t in result["turns"] if t["kind"] == "memory"]
    assert [(t["check"], t["next"], t["memory_ids"]) for t in memory_turns] == [
        (t.check, t.next, t.memory_ids) for t in trajectory.memory_turns]
    assert [t["decoded"] for t in result["turns"]] == [len(t.output_ids) for t in trajectory.turns]
    assert result["usage"]["cached"] == sum(t.num_cached_tokens for t in trajectory.turns)
    assert result["stop_chunk"] == trajectory.stop_chunk and result["chunks"] == trajectory.num_chunks


def test_memory_stream_sends_each_turn_then_the_result(tiny_server, offline_llm):
    sample = niah_document(offline_llm.tokenizer, seed=6)
    whole = tiny_server.client.post("/v1/memory", json=memory_body(sample, gates="own")).json()
    events = []
    with tiny_server.client.stream("POST", "/v1/memory", json=memory_body(sample, gates="own", stream=True)) as r:
        for line in r.iter_lines():
            if line.startswith("data: "):
                events.append(line.removeprefix("data: "))
    assert events[-1] == "[DONE]"
    turns = [json.loads(e)["turn"] for e in events[:-2]]
    result = json.loads(events[-2])["result"]
    assert [t["kind"] for t in turns] == [t["kind"] for t in whole["turns"]] and turns[-1]["kind"] == "answer"
    assert result["turns"] == turns and result["answer"] == whole["answer"]
    assert [t["memory_ids"] for t in turns if t["kind"] == "memory"] == [
        t["memory_ids"] for t in whole["turns"] if t["kind"] == "memory"]


def test_memory_runs_of_concurrent_clients_are_all_answered(tiny_server, offline_llm):
    """Four documents from four concurrent clients in one batch; the server ends idle (nothing pinned)."""
    samples = make_samples("niah_single_1", offline_llm.tokenizer, 512, 4, seed=8)
    with httpx.Client(base_url=tiny_server.url, timeout=120) as client:
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            results = list(pool.map(lambda s: client.post("/v1/memory", json=memory_body(s)).json(), samples))
    assert all(r["error"] is None and r["turns"][-1]["kind"] == "answer" for r in results)
    metrics = tiny_server.wait_idle()
    assert metrics["grumem:num_requests_running"] == 0
