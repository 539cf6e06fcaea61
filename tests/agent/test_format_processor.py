"""The turn format as the engine's logits processor, on a random-weight model: every output parses, the gate prior
decides every fork's gates, and preempted constrained forks come back with the same tokens."""
import re

import pytest
import torch

from grumem.agent import FormatArgs, TurnFormat
from grumem.engine import LLM, SamplingParams, TokenRole

TURN = (r"^<think>.*</think>\n<check>(yes|no)</check>\n<update>\n.*</update>\n<next>(continue|end)</next>"
        r"<\|im_end\|>$")


def random_prompts(num: int, length: int, seed: int = 0) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(100, 40000, (length,), generator=g).tolist() for _ in range(num)]


def engine(path: str, num_blocks: int = 256) -> tuple[LLM, TurnFormat]:
    llm = LLM(path, num_kvcache_blocks=num_blocks)
    return llm, TurnFormat.of(llm)


def format_params(**kw) -> SamplingParams:
    args = FormatArgs(max_think_tokens=kw.pop("think", 12), max_memory_tokens=kw.pop("memory", 12),
                      evidence_offset=kw.pop("evidence_offset", None))
    return SamplingParams(temperature=1.0, max_tokens=80, seed=0, logits_processors={TurnFormat.name: args}, **kw)


def test_constrained_output_is_always_parseable(tiny_llama_path):
    llm, turn_format = engine(tiny_llama_path)
    assert TurnFormat.of(llm) is turn_format  # one per engine
    for output in llm.generate(random_prompts(6, 20), format_params()):
        completion = output.outputs[0]
        match = re.match(TURN, llm.tokenizer.decode(completion.token_ids), re.S)
        assert match, llm.tokenizer.decode(completion.token_ids)
        assert completion.finish_reason == "stop"
        assert completion.extra[TurnFormat.name] == {"check": match.group(1), "next": match.group(2)}
        roles = completion.roles
        assert roles.count(TokenRole.CHOICE) == 2 and roles[0] == TokenRole.FORCED
        assert [lp for lp, r in zip(completion.logprobs, roles) if r == TokenRole.FORCED] == [0.0] * roles.count(
            TokenRole.FORCED)


@pytest.mark.parametrize("offset, gates", [(-1e4, {"check": "yes", "next": "end"}),
                                           (1e4, {"check": "no", "next": "continue"})])
def test_gate_prior_decides_the_gates_of_every_fork(tiny_llama_path, offset, gates):
    llm, _ = engine(tiny_llama_path)
    params = format_params(think=4, memory=4, n=3, prompt_logprobs=(8, 12), evidence_offset=offset)
    output = llm.generate(random_prompts(1, 12), params)[0]
    assert len(output.prompt_logprobs) == 4
    for completion in output.outputs:
        assert completion.extra[TurnFormat.name] == gates
        choices = [lp for lp, role in zip(completion.logprobs, completion.roles) if role == TokenRole.CHOICE]
        assert choices == [0.0, 0.0]  # certain under the biased distribution they were sampled from


def test_preempted_constrained_forks_keep_their_tokens(tiny_llama_path):
    """Four prompts forked three ways under the format: with a cache too small for all twelve sequences they are
    preempted and recomputed, and still produce exactly the tokens, roles and gates of an unconstrained cache."""
    prompts = random_prompts(4, 40, seed=3)
    params = format_params(think=24, memory=24, n=3)
    roomy, _ = engine(tiny_llama_path, num_blocks=256)
    tight, _ = engine(tiny_llama_path, num_blocks=26)
    expected, got = roomy.generate(prompts, params), tight.generate(prompts, params)
    assert tight.stats.num_preemptions > 0 and roomy.stats.num_preemptions == 0
    for a, b in zip(expected, got):
        assert b.error is None
        assert [(c.token_ids, c.roles, c.extra) for c in a.outputs] == [(c.token_ids, c.roles, c.extra)
                                                                           for c in b.outputs]
    assert tight.block_manager.num_free_blocks == 26
