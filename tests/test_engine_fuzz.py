"""The engine under random mixes of requests (hypothesis, tiny model): prompt lengths, max_tokens, n, the turn-format
constraint, priorities, aborts mid-flight and tiny KV budgets. Every request ends exactly once (finished or aborted),
no block leaks, and each greedy request not aborted produces what it produces alone on a roomy engine."""
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from grumem.agent import FormatArgs, TurnFormat
from grumem.engine import LLM, SamplingParams

MAX_STEPS = 3000  # far more than any example needs: reaching it means the engine hung

request = st.fixed_dictionaries({
    "prompt_len": st.integers(1, 60), "max_tokens": st.integers(1, 40), "n": st.integers(1, 3),
    "constrained": st.booleans(), "sampled": st.booleans(), "priority": st.integers(0, 2),
    "abort_at": st.one_of(st.none(), st.integers(0, 30)),
})
engine_options = st.fixed_dictionaries({
    "num_kvcache_blocks": st.integers(6, 20), "max_num_seqs": st.integers(1, 8),
    "max_num_batched_tokens": st.integers(16, 128),
})


@pytest.fixture(scope="module")
def roomy(tiny_llama_path):
    return LLM(tiny_llama_path, num_kvcache_blocks=512)


def params_of(spec: dict, turn_format: TurnFormat, seed: int) -> SamplingParams:
    processors = {turn_format.name: FormatArgs(max_think_tokens=3, max_memory_tokens=3)} if spec["constrained"] else {}
    return SamplingParams(temperature=1.0 if spec["sampled"] else 0.0, max_tokens=spec["max_tokens"], n=spec["n"],
                          seed=seed, ignore_eos=True, logits_processors=processors)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(specs=st.lists(request, min_size=2, max_size=8), options=engine_options)
def test_random_request_mixes_end_once_and_leak_nothing(tiny_llama_path, roomy, specs, options):
    llm = LLM(tiny_llama_path, **options)
    turn_format = TurnFormat.of(llm)
    g = torch.Generator().manual_seed(len(specs))
    prompts = [torch.randint(100, 40000, (s["prompt_len"],), generator=g).tolist() for s in specs]
    ids, rejected = {}, set()
    for i, (spec, prompt) in enumerate(zip(specs, prompts)):
        try:
            ids[llm.add_request(prompt, params_of(spec, turn_format, seed=i), f"r{i}", spec["priority"])] = i
        except ValueError:  # a prompt that can never fit this cache: rejected at once, nothing else affected
            rejected.add(i)
            assert (len(prompt) + 16) // 16 > options["num_kvcache_blocks"]
    outputs = {}
    for step in range(MAX_STEPS):
        to_abort = [f"r{i}" for i, s in enumerate(specs) if s["abort_at"] == step and f"r{i}" in llm.requests]
        for output in llm.abort(to_abort) + llm.step():
            assert output.request_id not in outputs, "a request ended twice"
            outputs[output.request_id] = output
        if not llm.has_unfinished_requests():
            break
    assert not llm.has_unfinished_requests(), "the engine hung"
    event(f"preempted: {llm.stats.num_preemptions > 0}")
    event(f"aborted: {any(c.finish_reason == 'abort' for o in outputs.values() for c in o.outputs)}")
    assert set(outputs) == set(ids)
    assert llm.block_manager.num_free_blocks == options["num_kvcache_blocks"]
    assert all(block.ref_count == 0 for block in llm.block_manager.blocks)
    for request_id, output in outputs.items():
        spec = specs[ids[request_id]]
        assert output.error is None, output.error
        reasons = {c.finish_reason for c in output.outputs}
        assert reasons <= {"stop", "length", "abort"}
        if "abort" in reasons or spec["sampled"]:
            continue
        assert len(output.outputs) == spec["n"]
        alone = roomy.generate([prompts[ids[request_id]]], params_of(spec, TurnFormat.of(roomy), 0))[0]
        assert [c.token_ids for c in output.outputs] == [c.token_ids for c in alone.outputs]
