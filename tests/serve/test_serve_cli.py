"""`grumem serve` as a user starts it: a real process, curl-style and openai-client requests, Ctrl-C."""
import re
import signal
import socket
import subprocess
import sys
import time

import httpx
import openai



def grumem(*args, **kwargs):
    return subprocess.Popen([sys.executable, "-c", "from grumem.cli import main; main()", *args],
                            stderr=subprocess.PIPE, text=True, **kwargs)


def test_serve_answers_http_and_openai_clients_then_stops_on_ctrl_c(tiny_llama_path):
    process = grumem("serve", "--model", tiny_llama_path, "--port", "0", "--kv-cache-gb", "0.05",
                     "--served-model-name", "tiny", "--log-level", "warning")
    try:
        line = process.stderr.readline()
        url = re.search(r"on (http://\S+) ", line)
        assert url, line
        base = url.group(1)
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(base + "/health").status_code == 200:
                    break
            except httpx.ConnectError:
                assert time.monotonic() < deadline, "the server did not come up"
                time.sleep(0.1)
        r = httpx.post(base + "/v1/completions", json={"model": "tiny", "prompt": "Hello", "max_tokens": 4})
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 4
        client = openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0)
        chat = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Hi"}], max_tokens=3)
        assert chat.usage.completion_tokens == 3
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) in (0, 130)


def test_a_port_in_use_stops_before_the_model_loads(tiny_llama_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = grumem("serve", "--model", tiny_llama_path, "--port", str(port))
        _, err = process.communicate(timeout=60)
    assert process.returncode == 2 and "grumem serve:" in err and "in use" in err
