"""A real server (uvicorn on 127.0.0.1, an ephemeral port) in a thread of the test process."""
import threading
import time

import httpx
from prometheus_client.parser import text_string_to_metric_families

from grumem.engine import LLM
from grumem.serve import bind, build_app, uvicorn_server

MODEL_NAME = "tiny"


class ServerThread:
    def __init__(self, llm: LLM, **options):
        self.llm = llm
        sock = bind("127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self.server = uvicorn_server(build_app(llm, MODEL_NAME, **options), "warning")
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.02)
        self.client = httpx.Client(base_url=self.url, timeout=120)

    def metrics(self) -> dict[str, float]:
        text = self.client.get("/metrics").text
        return {sample.name: sample.value for family in text_string_to_metric_families(text)
                for sample in family.samples if not sample.labels}

    def wait_idle(self, timeout: float = 20.0) -> dict[str, float]:
        """The metrics once the server holds nothing and no KV block is in use (fails after timeout)."""
        deadline = time.monotonic() + timeout
        while True:
            metrics = self.metrics()
            if metrics["grumem:num_requests_held"] == 0 and metrics["grumem:kv_cache_usage_perc"] == 0:
                return metrics
            assert time.monotonic() < deadline, f"still busy: {metrics}"
            time.sleep(0.05)

    def stop(self) -> None:
        self.client.close()
        self.server.should_exit = True
        self.thread.join(timeout=30)
