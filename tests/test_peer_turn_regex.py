"""The vLLM peer's regex of the turn format (benchmarks/peers/vllm_loops.py) accepts the turns grumem's format
writes, and refuses what the format cannot produce, so the two engines decode under the same constraint."""
import re
import sys
from pathlib import Path

import pytest

from grumem.agent import AgentConfig
from grumem.agent.turn_format import GateGrammar
from grumem.trainer.labelled_turns import write_turn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks" / "peers"))
from vllm_loops import turn_regex  # noqa: E402

CONFIG = AgentConfig(mode="grumem", layout="paper", gate_prior_threshold=None)


@pytest.mark.parametrize("think, check, memory, next_gate", [
    ("The special magic number for quiet-lake is: 4417.\n", "yes", "The magic number for quiet-lake is 4417.", "end"),
    ("Paul Graham writes about startups.\n", "no", "", "continue"),
    ("A thought cut by the token cap " + "and on " * 40, "no", "", "end"),
])
def test_grumem_turns_match_the_peer_regex(tokenizer, think, check, memory, next_gate):
    encode = lambda text: tokenizer.encode(text, add_special_tokens=False)  # noqa: E731
    ids, _, _ = write_turn(GateGrammar(tokenizer), CONFIG.memory_format, encode(think), check, encode(memory), next_gate)
    text = tokenizer.decode(ids, skip_special_tokens=True)
    assert re.fullmatch(turn_regex(CONFIG), text), text


@pytest.mark.parametrize("text", [
    "<think>x\n</think>\n<check>no</check>\n<update>\nkept anyway</update>\n<next>end</next>",  # memory after no
    "<think>x\n</think>\n<check>yes</check>\n<update>\n</update>\n<next>end</next>",  # empty memory after yes
    "<think>x\n</think>\n<check>maybe</check>\n<update>\n</update>\n<next>end</next>",
    "<think>x\n</think>\n<check>no</check>\n<update>\n</update>\n<next>end",
])
def test_the_peer_regex_refuses_what_the_format_cannot_write(text):
    assert not re.fullmatch(turn_regex(CONFIG), text)
