"""The engine end to end on real weights: greedy output equals transformers, prefix caching, fork, preemption."""
import pytest
import torch
from transformers import AutoModelForCausalLM

from helpers import forward_logits
from grumem.engine import LLM, LogitsProcessor, SamplingParams, TokenRole

GREEDY = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)


def hf_greedy(path: str, prompts: list[list[int]], max_tokens: int) -> list[list[int]]:
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    model.generation_config.eos_token_id = None  # run the full length through EOS, like ignore_eos
    outputs = []
    for prompt in prompts:  # one at a time: no padding effects in the oracle
        ids = model.generate(torch.tensor([prompt]), max_new_tokens=max_tokens, do_sample=False, pad_token_id=0)
        outputs.append(ids[0, len(prompt):].tolist())
    return outputs


def prompts_with_shared_prefix(num: int, prefix_len: int, suffix_len: int, seed: int = 0) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    prefix = torch.randint(100, 40000, (prefix_len,), generator=g).tolist()
    return [prefix + torch.randint(100, 40000, (suffix_len,), generator=g).tolist() for _ in range(num)]


@pytest.fixture(scope="module")
def tiny_llm(tiny_llama_path):
    return LLM(tiny_llama_path, num_kvcache_blocks=256)


@pytest.fixture(scope="module")
def tiny_reference(tiny_llama_path):
    prompts = prompts_with_shared_prefix(4, 40, 9) + [[7, 8, 9]]
    return prompts, hf_greedy(tiny_llama_path, prompts, GREEDY.max_tokens)


@pytest.mark.parametrize("backend", ["torch", "cpu", "triton"])
def test_greedy_batch_equals_transformers(tiny_llama_path, tiny_reference, backend):
    prompts, expected = tiny_reference
    llm = LLM(tiny_llama_path, num_kvcache_blocks=256, attention_backend=backend)
    outputs = llm.generate(prompts, GREEDY)
    assert [o.outputs[0].token_ids for o in outputs] == expected


def test_greedy_one_at_a_time_with_prefix_hits_equals_transformers(tiny_llm, tiny_reference):
    prompts, expected = tiny_reference
    for prompt, reference in zip(prompts, expected):
        assert tiny_llm.generate([prompt], GREEDY)[0].outputs[0].token_ids == reference
    again = tiny_llm.generate([prompts[0]], GREEDY)[0]  # its blocks are all cached now
    block_size = tiny_llm.config.kvcache_block_size
    full_blocks = (len(prompts[0]) - 1) // block_size  # the last prompt token is always computed
    assert again.num_cached_tokens == full_blocks * block_size > 0 and again.outputs[0].token_ids == expected[0]


def test_chunked_prefill_gives_the_same_tokens(tiny_llama_path, tiny_reference):
    prompts, expected = tiny_reference
    llm = LLM(tiny_llama_path, num_kvcache_blocks=256, max_num_batched_tokens=7)  # every prompt split in chunks
    assert [o.outputs[0].token_ids for o in llm.generate(prompts, GREEDY)] == expected
    assert llm.stats.num_prefill_steps > len(prompts)


def test_identical_prompts_in_one_step_share_blocks(tiny_llama_path):
    llm = LLM(tiny_llama_path, num_kvcache_blocks=256)
    prompt = prompts_with_shared_prefix(1, 64, 5)[0]  # 69 tokens: 4 full blocks
    outputs = llm.generate([prompt] * 4, GREEDY)
    assert [o.num_cached_tokens for o in outputs] == [0, 64, 64, 64]
    assert llm.stats.num_prefill_steps == 1 and llm.stats.num_prefill_tokens == 69 + 3 * 5
    assert len({tuple(o.outputs[0].token_ids) for o in outputs}) == 1


def test_shared_prefix_is_computed_once(tiny_llama_path):
    llm = LLM(tiny_llama_path, num_kvcache_blocks=512)
    prompts = prompts_with_shared_prefix(16, 64, 20)
    llm.generate(prompts, GREEDY)
    assert llm.stats.num_cached_tokens == 15 * 64
    assert llm.stats.num_prefill_tokens == 64 + 16 * 20


def test_fork_shares_prompt_blocks_and_copies_the_partial_one(tiny_llama_path):
    llm = LLM(tiny_llama_path, num_kvcache_blocks=64)
    prompt = prompts_with_shared_prefix(1, 40, 0)[0]  # 2 full blocks + 8 tokens
    request_id = llm.add_request(prompt, SamplingParams(temperature=1.0, max_tokens=4, n=4, seed=3))
    llm.step()  # prefill once, then fork
    seqs = llm.requests[request_id].seqs
    assert len(seqs) == 4 and llm.stats.num_prefill_tokens == 40
    tables = [seq.block_table for seq in seqs]
    assert all(t[:2] == tables[0][:2] for t in tables)  # full blocks shared
    assert len({t[2] for t in tables}) == 4  # the partial block is each sample's own copy
    assert llm.block_manager.blocks[tables[0][0]].ref_count == 4
    torch.testing.assert_close(llm.model_runner.kv_cache[:, :, tables[1][2], :8],
                               llm.model_runner.kv_cache[:, :, tables[0][2], :8])
    while llm.has_unfinished_requests():
        finished = llm.step()
    (output,) = finished
    assert [c.index for c in output.outputs] == [0, 1, 2, 3]
    assert len({tuple(c.token_ids) for c in output.outputs}) > 1  # different samples from one seed
    assert llm.block_manager.num_free_blocks == 64


def test_forked_samples_continue_like_fresh_requests(tiny_llama_path):
    """A fork's decode over shared and copied blocks equals a request prefilled on its own."""
    llm = LLM(tiny_llama_path, num_kvcache_blocks=64)
    prompt = prompts_with_shared_prefix(1, 37, 0)[0]
    forked = llm.generate([prompt], SamplingParams(temperature=0, max_tokens=8, n=3, ignore_eos=True))[0]
    single = llm.generate([prompt], SamplingParams(temperature=0, max_tokens=8, ignore_eos=True))[0]
    assert all(c.token_ids == single.outputs[0].token_ids for c in forked.outputs)


def test_preemption_keeps_every_request_and_its_greedy_output(tiny_llama_path):
    prompts = [prompts_with_shared_prefix(1, 60, 0, seed=i)[0] for i in range(4)]
    expected = hf_greedy(tiny_llama_path, prompts, GREEDY.max_tokens)
    # 4 prompts take 16 blocks; crossing 64 tokens in decode needs 4 more, and only 2 are left
    llm = LLM(tiny_llama_path, num_kvcache_blocks=18)
    outputs = llm.generate(prompts, GREEDY)
    assert llm.stats.num_preemptions > 0
    assert [o.outputs[0].token_ids for o in outputs] == expected
    assert llm.block_manager.num_free_blocks == 18


def test_logprobs_equal_a_full_forward(tiny_llama_path):
    llm = LLM(tiny_llama_path, num_kvcache_blocks=64)
    prompt = prompts_with_shared_prefix(1, 20, 0)[0]
    output = llm.generate([prompt], SamplingParams(temperature=0.7, top_p=1.0, max_tokens=10, seed=5))[0]
    completion = output.outputs[0]
    logits = forward_logits(llm.model_runner.model, [prompt + completion.token_ids])[0]
    expected = (logits[len(prompt) - 1 : -1] / 0.7).log_softmax(-1)
    expected = expected.gather(1, torch.tensor(completion.token_ids)[:, None]).squeeze(1)
    torch.testing.assert_close(torch.tensor(completion.logprobs), expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("backend", ["torch", "cpu"])
def test_bf16_kv_cache_keeps_the_logprobs_close(tiny_llama_path, backend):
    """Half the cache bytes: the fp32 model reads keys and values rounded to bf16 (8 mantissa bits)."""
    prompt = prompts_with_shared_prefix(1, 40, 0)[0]
    params = SamplingParams(temperature=0, max_tokens=8, ignore_eos=True, prompt_logprobs=(20, 40))
    outputs = {}
    for kv_dtype in (None, "bfloat16"):
        llm = LLM(tiny_llama_path, num_kvcache_blocks=64, attention_backend=backend, kv_cache_dtype=kv_dtype,
                  max_num_batched_tokens=16)  # later prefill chunks read earlier ones from the cache
        assert llm.model_runner.kv_cache.dtype == (torch.bfloat16 if kv_dtype else torch.float32)
        outputs[kv_dtype] = llm.generate([prompt], params)[0]
    exact, narrow = outputs[None], outputs["bfloat16"]
    torch.testing.assert_close(torch.tensor(narrow.prompt_logprobs), torch.tensor(exact.prompt_logprobs),
                               atol=2e-2, rtol=0)
    assert narrow.prompt_logprobs != exact.prompt_logprobs  # the cache really was bf16
    with pytest.raises(ValueError, match="kv_cache_dtype"):
        LLM(tiny_llama_path, kv_cache_dtype="int8")


def test_auto_dtype_is_bf16_only_where_it_is_fast():
    from grumem.engine.config import Config, cpu_has_native_bf16

    assert Config(dtype="auto", device="cpu").dtype == ("bfloat16" if cpu_has_native_bf16() else "float32")


def test_prompt_logprobs_equal_a_full_forward_even_when_cached_or_chunked(tiny_llama_path):
    llm = LLM(tiny_llama_path, num_kvcache_blocks=64, max_num_batched_tokens=7)  # the span crosses prefill chunks
    prompt = prompts_with_shared_prefix(1, 45, 0)[0]
    params = SamplingParams(temperature=0, max_tokens=1, prompt_logprobs=(20, 45))
    logits = forward_logits(llm.model_runner.model, [prompt])[0]
    expected = logits[19:44].log_softmax(-1).gather(1, torch.tensor(prompt[20:45])[:, None]).squeeze(1)
    first, again = (llm.generate([prompt], params)[0] for _ in range(2))
    assert again.num_cached_tokens == 16  # the cache serves only what comes before the span
    for output in (first, again):
        torch.testing.assert_close(torch.tensor(output.prompt_logprobs), expected, atol=1e-4, rtol=1e-4)


def test_bad_requests_fail_alone(tiny_llama_path):
    llm = LLM(tiny_llama_path, num_kvcache_blocks=64, max_model_len=128)
    good = [5, 6, 7]
    prompts = [good, [], [1] * 200, [3, 10**6], good, good]
    params = [SamplingParams(temperature=0, max_tokens=4)] * 5 + [SamplingParams(prompt_logprobs=(1, 9))]
    outputs = llm.generate(prompts, params)
    errors = [o.error for o in outputs]
    assert errors[0] is None and errors[4] is None
    assert "empty prompt" in errors[1]
    assert "max_model_len=128" in errors[2]
    assert "outside the vocabulary" in errors[3]
    assert "runs past the prompt" in errors[5]
    assert outputs[0].outputs[0].token_ids == outputs[4].outputs[0].token_ids
    with pytest.raises(ValueError, match="max_tokens must be >= 1"):
        SamplingParams(max_tokens=0)
    with pytest.raises(ValueError, match="unknown logits processors"):
        llm.add_request(good, SamplingParams(logits_processors={"nope": {}}))


def test_kv_exhaustion_fails_only_the_request_that_cannot_fit(tiny_llama_path):
    llm = LLM(tiny_llama_path, num_kvcache_blocks=8)
    pinned_prompt = prompts_with_shared_prefix(1, 96, 1)[0]
    llm.generate([pinned_prompt], GREEDY)
    pinned = llm.pin_prefix(pinned_prompt)  # 6 of the 8 blocks are now held
    assert len(pinned) == 6
    outputs = llm.generate([prompts_with_shared_prefix(1, 60, 0, seed=9)[0], [4, 5]], GREEDY)
    assert "KV cache exhausted" in outputs[0].error
    assert outputs[1].error is None and len(outputs[1].outputs[0].token_ids) == GREEDY.max_tokens
    llm.unpin(pinned)
    assert llm.block_manager.num_free_blocks == 8


def test_update_weights_changes_output_and_resets_the_cache(tiny_llama_path):
    llm = LLM(tiny_llama_path, num_kvcache_blocks=64)
    prompt = prompts_with_shared_prefix(1, 40, 0)[0]
    before = llm.generate([prompt], GREEDY)[0].outputs[0].token_ids
    model = llm.model_runner.model
    head = model.lm_head.weight.detach().clone()
    llm.update_weights([("lm_head.weight", head.flip(0))])
    assert llm.block_manager.hash_to_block == {}
    after = llm.generate([prompt], GREEDY)[0]
    assert after.num_cached_tokens == 0 and after.outputs[0].token_ids != before


@pytest.mark.slow
def test_smollm2_greedy_batch_equals_transformers(smollm2_path):
    llm = LLM()
    tokenizer = llm.tokenizer
    questions = ["What is the capital of France?", "Name three colors.", "What is 12 times 12?"]
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True,
                                             tokenize=True, return_dict=False) for q in questions]
    expected = hf_greedy(smollm2_path, prompts, 16)
    outputs = llm.generate(prompts, SamplingParams(temperature=0, max_tokens=16, ignore_eos=True))
    assert [o.outputs[0].token_ids for o in outputs] == expected
    assert outputs[1].num_cached_tokens > 0  # the shared system prompt


def test_admission_prefers_prompts_with_a_cached_prefix(tiny_llama_path):
    llm = LLM(tiny_llama_path, num_kvcache_blocks=64, max_num_seqs=1)
    warm = prompts_with_shared_prefix(1, 32, 3, seed=1)[0]
    llm.generate([warm], GREEDY)  # its first two blocks are now cached
    cold_id = llm.add_request(prompts_with_shared_prefix(1, 32, 3, seed=2)[0], GREEDY)
    warm_id = llm.add_request(warm[:32] + [11, 12, 13], GREEDY)  # arrives later, same priority
    finished = []
    while llm.has_unfinished_requests():
        finished += [o.request_id for o in llm.step()]
    assert finished == [warm_id, cold_id]


def test_update_weights_waits_for_an_idle_engine(tiny_llama_path):
    llm = LLM(tiny_llama_path, num_kvcache_blocks=64)
    head = llm.model_runner.model.lm_head.weight.detach().clone()
    llm.add_request([5, 6, 7], GREEDY)
    llm.step()
    with pytest.raises(RuntimeError, match="idle engine"):
        llm.update_weights([("lm_head.weight", head.flip(0))])
    assert torch.equal(llm.model_runner.model.lm_head.weight, head)  # nothing was loaded
    llm.abort()
    llm.update_weights([("lm_head.weight", head.flip(0))])
    assert torch.equal(llm.model_runner.model.lm_head.weight, head.flip(0))


def test_an_idle_engine_steps_to_nothing(tiny_llm):
    assert not tiny_llm.has_unfinished_requests()
    assert tiny_llm.step() == [] and tiny_llm.abort() == []


def test_abort_returns_partial_outputs_and_frees_blocks(tiny_llama_path):
    llm = LLM(tiny_llama_path, num_kvcache_blocks=64)
    sampled = SamplingParams(temperature=1.0, max_tokens=50, seed=1, n=3, ignore_eos=True)
    forked = llm.add_request(prompts_with_shared_prefix(1, 40, 0)[0], sampled)
    kept = llm.add_request(prompts_with_shared_prefix(1, 20, 0, seed=2)[0], GREEDY)
    for _ in range(4):
        llm.step()
    (output,) = llm.abort([forked, "no-such-request"])
    assert [c.finish_reason for c in output.outputs] == ["abort"] * 3
    assert all(0 < len(c.token_ids) < 50 and len(c.token_ids) == len(c.logprobs) for c in output.outputs)
    assert llm.has_unfinished_requests()  # the other request runs on
    finished = []
    while llm.has_unfinished_requests():
        finished += llm.step()
    assert [o.request_id for o in finished] == [kept]
    assert finished[0].outputs[0].finish_reason == "length"
    waiting = llm.add_request([5, 6, 7], GREEDY)  # aborted before it was ever scheduled
    (output,) = llm.abort()
    assert output.request_id == waiting and output.outputs[0].token_ids == []
    assert llm.block_manager.num_free_blocks == 64 and llm.step() == []


class ForceAfter(LogitsProcessor):
    """A toy processor: bans token `banned`, forces `forced` after every `every` sampled tokens, and ends a sequence
    once it forced `limit` times; an arg of None is its bias-free opt-in. Reports how many it forced."""

    name = "test.force_after"

    def __init__(self, banned: int, forced: int):
        self.banned, self.forced = banned, forced
        self.prompt_logprobs_seen = []

    def new_state(self, args, params):
        if args["every"] < 1:
            raise ValueError("every must be >= 1")
        return {"every": args["every"], "limit": args["limit"], "since": 0, "count": 0}

    def apply(self, logits, states):
        logits = logits.clone()
        owned = torch.tensor([s is not None for s in states])
        logits[owned, self.banned] = float("-inf")
        return logits, [self.forced if s is not None and s["since"] == s["every"] else -1 for s in states]

    def observe(self, state, token_id):
        if state["since"] == state["every"]:
            state["since"], state["count"] = 0, state["count"] + 1
            return TokenRole.FORCED
        state["since"] += 1
        return TokenRole.SAMPLED

    def is_finished(self, state):
        return state["count"] == state["limit"]

    def observe_prompt_logprobs(self, state, logprobs):
        self.prompt_logprobs_seen.append(list(logprobs))

    def fork(self, state):
        return dict(state)

    def output(self, state):
        return state["count"]


def test_a_logits_processor_masks_forces_ends_and_forks(tiny_llama_path):
    llm = LLM(tiny_llama_path, num_kvcache_blocks=64)
    prompt = prompts_with_shared_prefix(1, 20, 0)[0]
    free = SamplingParams(temperature=1.0, max_tokens=30, seed=4, ignore_eos=True)
    favourite = llm.generate([prompt], SamplingParams(temperature=0, max_tokens=1))[0].outputs[0].token_ids[0]
    processor = ForceAfter(banned=favourite, forced=7)
    llm.add_logits_processor(processor)
    with pytest.raises(ValueError, match="already registered"):
        llm.add_logits_processor(ForceAfter(1, 2))
    params = SamplingParams(temperature=0, max_tokens=30, n=2, ignore_eos=True, prompt_logprobs=(5, 9),
                            logits_processors={processor.name: {"every": 3, "limit": 4}})
    constrained, plain = llm.generate([prompt, prompt], [params, free])
    assert processor.prompt_logprobs_seen == [constrained.prompt_logprobs]  # once, before the fork
    for completion in constrained.outputs:
        ids, roles = completion.token_ids, completion.roles
        assert len(ids) == 16 and completion.finish_reason == "stop" and completion.extra == {processor.name: 4}
        assert roles == ([TokenRole.SAMPLED] * 3 + [TokenRole.FORCED]) * 4 and ids[3::4] == [7] * 4
        assert favourite not in ids[0::4]  # the greedy favourite is banned wherever the model chooses
    assert plain.outputs[0].extra == {} and len(plain.outputs[0].token_ids) == 30  # the row beside it is untouched
    bad = llm.generate([prompt], SamplingParams(logits_processors={processor.name: {"every": 0, "limit": 1}}))[0]
    assert "every must be >= 1" in bad.error
