"""Abort, disconnects, pause, weight updates, cache flush, overload and bad input against a real server: each
frees what it held (no KV block in use afterwards) and leaves the other requests and the server unharmed."""
import json
import threading
import time

import httpx
import pytest
from safetensors.torch import load_file, save_file

from grumem.engine import LLM, SamplingParams
from server_thread import ServerThread


def post(server, path, body):
    return server.client.post(path, json=body)


def test_abort_returns_the_partial_output(tiny_server):
    events = []

    def stream():
        body = {"input_ids": [1, 2, 3], "rid": "long-1", "stream": True,
                "sampling_params": {"max_new_tokens": 500, "temperature": 1.0, "seed": 1, "ignore_eos": True}}
        with httpx.stream("POST", tiny_server.url + "/generate", json=body, timeout=60) as r:
            for line in r.iter_lines():
                if line.startswith("data: {"):
                    events.append(json.loads(line.removeprefix("data: ")))

    thread = threading.Thread(target=stream)
    thread.start()
    deadline = time.monotonic() + 30
    while not events or len(events[-1]["output_ids"]) < 5:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert post(tiny_server, "/abort_request", {"rid": "long-1"}).json() == {"aborted": 1}
    thread.join(timeout=30)
    final = events[-1]
    assert final["meta_info"]["finish_reason"] == {"type": "abort"}
    assert 5 <= len(final["output_ids"]) < 500
    tiny_server.wait_idle()


def test_a_client_that_disconnects_mid_stream_frees_everything(tiny_server):
    body = {"model": "tiny", "prompt": [5, 6, 7], "max_tokens": 480, "temperature": 1.0, "stream": True}
    aborted_before = _aborted(tiny_server)
    with httpx.stream("POST", tiny_server.url + "/v1/completions", json=body, timeout=60) as r:
        lines = r.iter_lines()
        assert next(lines).startswith("data: ")  # then the connection closes with the request mid-way
    tiny_server.wait_idle()
    assert _aborted(tiny_server) == aborted_before + 1


def test_a_memory_client_that_gives_up_cancels_its_loop(tiny_server):
    """Paused, the loop cannot finish; the client times out and the whole loop is cancelled and unpinned."""
    assert post(tiny_server, "/pause_generation", {}).json() == {"paused": True}
    try:
        body = {"document": "word " * 2000, "question": "Which word?", "chunk_tokens": 128}
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(tiny_server.url + "/v1/memory", json=body, timeout=1.0)
        deadline = time.monotonic() + 20
        while tiny_server.metrics()["grumem:num_requests_held"]:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        post(tiny_server, "/continue_generation", {})
    tiny_server.wait_idle()


def test_a_memory_stream_that_disconnects_after_its_first_turn_cancels_the_loop(tiny_server):
    body = {"document": "word " * 3000, "question": "Which word?", "chunk_tokens": 128, "stream": True}
    with httpx.stream("POST", tiny_server.url + "/v1/memory", json=body, timeout=60) as r:
        first = next(line for line in r.iter_lines() if line.startswith("data: "))
    assert json.loads(first.removeprefix("data: "))["turn"]["chunk"] == 0
    tiny_server.wait_idle()


def test_abort_all_stops_every_request(tiny_server):
    post(tiny_server, "/pause_generation", {})
    bodies = [{"input_ids": [1, 2, i], "sampling_params": {"max_new_tokens": 50}} for i in range(3)]
    results = []
    threads = [threading.Thread(target=lambda b=b: results.append(post(tiny_server, "/generate", b).json()))
               for b in bodies]
    try:
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 10
        while tiny_server.metrics()["grumem:num_requests_held"] < 3:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert post(tiny_server, "/abort_request", {"abort_all": True}).json() == {"aborted": 3}
    finally:
        post(tiny_server, "/continue_generation", {})
        for thread in threads:
            thread.join(timeout=30)
    assert [r["meta_info"]["finish_reason"] for r in results] == [{"type": "abort"}] * 3
    assert all(r["output_ids"] == [] for r in results)  # paused: aborted before their first token
    tiny_server.wait_idle()


def test_a_rejected_duplicate_rid_leaves_the_first_request_alone(tiny_server):
    post(tiny_server, "/pause_generation", {})
    first = []
    body = {"document": "word " * 300, "question": "Which word?", "chunk_tokens": 128, "rid": "dup"}
    thread = threading.Thread(target=lambda: first.append(post(tiny_server, "/v1/memory", body)))
    try:
        thread.start()
        deadline = time.monotonic() + 10
        while tiny_server.metrics()["grumem:num_requests_held"] == 0:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        second = post(tiny_server, "/v1/memory", {**body, "stream": True})
        assert second.status_code == 400 and "already in flight" in second.json()["error"]["message"]
    finally:
        post(tiny_server, "/continue_generation", {})
        thread.join(timeout=60)
    assert first[0].status_code == 200 and first[0].json()["aborted"] is False


def test_a_stream_that_fails_midway_ends_with_an_error_event(tiny_llama_path):
    """Four KV blocks hold 64 tokens: the sequence outgrows the cache and fails; the stream says so and ends."""
    server = ServerThread(LLM(tiny_llama_path, num_kvcache_blocks=4, max_num_seqs=1))
    try:
        body = {"prompt": [1, 2, 3], "max_tokens": 200, "temperature": 1.0, "stream": True}
        with server.client.stream("POST", "/v1/completions", json=body) as r:
            lines = [line for line in r.iter_lines() if line.startswith("data: ")]
        assert lines[-1] == "data: [DONE]"
        error = json.loads(lines[-2].removeprefix("data: "))["error"]
        assert "KV cache exhausted" in error["message"]
        server.wait_idle()
    finally:
        server.stop()


def _aborted(server) -> float:
    text = server.client.get("/metrics").text
    line = next((l for l in text.splitlines() if l.startswith('grumem:request_success_total{finished_reason="abort"}')),
                None)
    return float(line.split()[-1]) if line else 0.0


def test_update_weights_serves_the_new_weights_and_reports_the_version(tiny_server, tiny_llama_path, tmp_path):
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (tmp_path / name).write_bytes(open(f"{tiny_llama_path}/{name}", "rb").read())
    weights = load_file(f"{tiny_llama_path}/model.safetensors")
    save_file({k: v * 1.5 if k == "lm_head.weight" else v for k, v in weights.items()}, tmp_path / "model.safetensors")
    before = post(tiny_server, "/generate", {"input_ids": [9, 8, 7], "sampling_params": {"max_new_tokens": 8,
                                                                                         "temperature": 0}})
    version = before.json()["meta_info"]["weight_version"]
    r = post(tiny_server, "/update_weights_from_disk", {"model_path": str(tmp_path)})
    assert r.json() == {"success": True, "weight_version": version + 1}
    try:
        after = post(tiny_server, "/generate", {"input_ids": [9, 8, 7], "sampling_params": {"max_new_tokens": 8,
                                                                                            "temperature": 0}})
        assert after.headers["x-weight-version"] == str(version + 1)
        expected = LLM(str(tmp_path), num_kvcache_blocks=64).generate(
            [[9, 8, 7]], SamplingParams(temperature=0, max_tokens=8))[0].outputs[0].token_ids
        assert after.json()["output_ids"] == expected
    finally:
        post(tiny_server, "/update_weights_from_disk", {"model_path": tiny_llama_path})
    missing = post(tiny_server, "/update_weights_from_disk", {"model_path": str(tmp_path / "nowhere")})
    assert missing.status_code == 400 and "nowhere" in missing.json()["error"]["message"]


def test_update_weights_waits_for_an_idle_engine(tiny_server, tiny_llama_path):
    post(tiny_server, "/pause_generation", {})
    thread = threading.Thread(target=post, args=(tiny_server, "/generate", {"input_ids": [1, 2]}))
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while tiny_server.metrics()["grumem:num_requests_held"] == 0:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        r = post(tiny_server, "/update_weights_from_disk", {"model_path": tiny_llama_path})
        assert r.status_code == 409 and "in flight" in r.json()["error"]["message"]
    finally:
        post(tiny_server, "/continue_generation", {})
        thread.join(timeout=30)


def test_flush_cache_forgets_cached_prefixes(tiny_server):
    body = {"input_ids": list(range(300, 340)), "sampling_params": {"max_new_tokens": 2, "temperature": 0}}
    post(tiny_server, "/generate", body)
    assert post(tiny_server, "/generate", body).json()["meta_info"]["cached_tokens"] == 32
    assert post(tiny_server, "/flush_cache", {}).json() == {"success": True}
    assert post(tiny_server, "/generate", body).json()["meta_info"]["cached_tokens"] == 0


def test_a_full_server_answers_503_with_retry_after(tiny_llama_path):
    server = ServerThread(LLM(tiny_llama_path, num_kvcache_blocks=64, max_num_seqs=1), max_queue=0, control=True)
    try:
        post(server, "/pause_generation", {})
        thread = threading.Thread(target=post, args=(server, "/generate", {"input_ids": [1, 2]}))
        thread.start()
        deadline = time.monotonic() + 10
        while server.metrics()["grumem:num_requests_held"] == 0:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        r = post(server, "/v1/completions", {"prompt": [3, 4], "max_tokens": 2})
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        post(server, "/continue_generation", {})
        thread.join(timeout=30)
        assert post(server, "/v1/completions", {"prompt": [3, 4], "max_tokens": 2}).status_code == 200
    finally:
        server.stop()


BAD_INPUTS = [
    ("/v1/completions", b"{not json", "malformed JSON"),
    ("/v1/completions", [1, 2, 3], "the body must be a JSON object"),
    ("/v1/completions", {"max_tokens": 3}, "prompt: Field required"),
    ("/v1/completions", {"prompt": list(range(1, 600))}, "max_model_len=512"),
    ("/v1/completions", {"prompt": [5, 49152]}, "token id 49152 is outside the vocabulary"),
    ("/v1/completions", {"prompt": "x", "n": 0}, "n: Input should be greater than or equal to 1"),
    ("/v1/completions", {"prompt": "x", "best_of": 2}, "best_of: Extra inputs are not permitted"),
    ("/v1/chat/completions", {"messages": []}, "messages: List should have at least 1 item"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "top_logprobs": 2},
     "top_logprobs needs logprobs: true"),
    ("/v1/completions", {"prompt": "x", "logit_bias": {"5": 10}}, "logit_bias: Extra inputs are not permitted"),
    ("/generate", {"input_ids": [1], "text": "x"}, "exactly one of input_ids or text"),
    ("/generate", {"input_ids": [1], "sampling_params": {"gate_constraint": {"mode": "all"}}}, "gate_constraint.mode"),
    ("/v1/memory", {"document": "   \n ", "question": "q"}, "empty document"),
    ("/v1/memory", {"document_ids": [], "question": "q"}, "empty document"),
    ("/v1/memory", {"document_ids": [1, 99999], "question": "q"}, "token id 99999 is outside the vocabulary"),
    ("/v1/memory", {"document": "text " * 50, "question": "why " * 40, "chunk_tokens": 16}, "longer than the chunk"),
    ("/v1/memory", {"document": "text", "question": "q", "chunk_tokens": 0}, "chunk_tokens must be >= 1"),
    ("/v1/memory", {"document": "text", "question": ""}, '"question" must be a non-empty string'),
]


@pytest.mark.parametrize("path, body, message", BAD_INPUTS, ids=[m for _, _, m in BAD_INPUTS])
def test_bad_input_gets_a_400_that_names_the_problem(tiny_server, path, body, message):
    if isinstance(body, bytes):
        r = tiny_server.client.post(path, content=body, headers={"content-type": "application/json"})
    else:
        r = post(tiny_server, path, body)
    assert r.status_code == 400, r.text
    assert message in r.json()["error"]["message"]
    assert post(tiny_server, "/v1/completions", {"prompt": [3, 4], "max_tokens": 2}).status_code == 200
    tiny_server.wait_idle()


def test_metrics_parse_and_count_what_was_served(tiny_server):
    before = tiny_server.metrics()
    post(tiny_server, "/v1/completions", {"prompt": list(range(400, 440)), "max_tokens": 3, "temperature": 0})
    post(tiny_server, "/v1/completions", {"prompt": list(range(400, 440)), "max_tokens": 3, "temperature": 0})
    after = tiny_server.metrics()
    assert after["grumem:generation_tokens_total"] - before["grumem:generation_tokens_total"] == 6
    assert after["grumem:prefix_cache_hits_total"] - before["grumem:prefix_cache_hits_total"] == 32
    assert after["grumem:time_to_first_token_seconds_count"] - before["grumem:time_to_first_token_seconds_count"] == 2
    assert tiny_server.client.get("/health").json() == {"status": "ok"}
