"""The tests' server: a tiny model behind a real server (server_thread.py), and the same weights offline."""
import pytest

from grumem.engine import LLM
from server_thread import ServerThread


@pytest.fixture(scope="module")
def tiny_server(tiny_llama_path):
    server = ServerThread(LLM(tiny_llama_path, num_kvcache_blocks=256, max_num_seqs=8), control=True)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def offline_llm(tiny_llama_path):
    """The same weights outside the server: what the server's answers must equal."""
    return LLM(tiny_llama_path, num_kvcache_blocks=256, max_num_seqs=8)
