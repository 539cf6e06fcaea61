"""The OpenAI-compatible endpoints against a real server, through the official openai client unchanged."""
import openai
import pytest

from grumem.engine import SamplingParams


@pytest.fixture(scope="module")
def client(tiny_server):
    return openai.OpenAI(base_url=tiny_server.url + "/v1", api_key="unused", max_retries=0)


def test_models_lists_the_served_model(client):
    assert [m.id for m in client.models.list().data] == ["tiny"]


def test_completion_equals_the_offline_engine(client, tiny_server, offline_llm):
    prompt = "The capital of France is"
    result = client.completions.create(model="tiny", prompt=prompt, max_tokens=12, temperature=0, logprobs=2,
                                       extra_body={"return_token_ids": True})
    ids = offline_llm.tokenizer.encode(prompt)
    offline = offline_llm.generate([ids], SamplingParams(temperature=0, max_tokens=12, logprobs=2))[0].outputs[0]
    choice = result.choices[0]
    assert choice.token_ids == offline.token_ids and choice.prompt_token_ids == ids
    assert choice.text == offline_llm.tokenizer.decode(offline.token_ids, skip_special_tokens=True)
    assert choice.finish_reason == "length"
    assert choice.logprobs.token_logprobs == pytest.approx([top[t] for t, top in
                                                            zip(offline.token_ids, offline.top_logprobs)], abs=1e-4)
    assert all(len(top) == 2 for top in choice.logprobs.top_logprobs)
    assert result.usage.prompt_tokens == len(ids) and result.usage.completion_tokens == 12


def test_token_id_prompts_and_several_prompts(client, offline_llm):
    prompts = [[1, 2, 3, 4], [5, 6, 7]]
    result = client.completions.create(model="tiny", prompt=prompts, max_tokens=5, temperature=0, n=2, seed=3,
                                       extra_body={"return_token_ids": True})
    assert [c.index for c in result.choices] == [0, 1, 2, 3]
    offline = offline_llm.generate(prompts, SamplingParams(temperature=0, max_tokens=5, n=2, seed=3))
    assert [c.token_ids for c in result.choices] == [o.token_ids for out in offline for o in out.outputs]
    assert [c.prompt_token_ids for c in result.choices] == [prompts[0]] * 2 + [prompts[1]] * 2


def test_stop_string_ends_the_text_before_it(client, offline_llm):
    prompt = [10, 20, 30]
    full = offline_llm.generate([prompt], SamplingParams(temperature=0, max_tokens=24))[0].outputs[0]
    text = offline_llm.tokenizer.decode(full.token_ids, skip_special_tokens=True)
    stop = text[len(text) // 2 : len(text) // 2 + 3]
    result = client.completions.create(model="tiny", prompt=prompt, max_tokens=24, temperature=0, stop=[stop])
    assert result.choices[0].text == text[: text.index(stop)]
    assert result.choices[0].finish_reason == "stop"


def test_streaming_completion_adds_up_to_the_whole(client):
    kwargs = dict(model="tiny", prompt="Once upon a time", max_tokens=16, temperature=0)
    whole = client.completions.create(**kwargs)
    chunks = list(client.completions.create(**kwargs, stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == whole.choices[0].text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 16
    plain = list(client.completions.create(**kwargs, stream=True))  # OpenAI: usage only when asked for
    assert all(c.choices and c.usage is None for c in plain)


def test_stop_strings_with_several_samples_end_each_sample(client, offline_llm):
    prompt = [11, 12, 13]
    params = SamplingParams(temperature=1.0, max_tokens=30, n=3, seed=5)
    full = offline_llm.generate([prompt], params)[0].outputs
    texts = [offline_llm.tokenizer.decode(c.token_ids, skip_special_tokens=True) for c in full]
    stop = texts[0][5:8]
    result = client.completions.create(model="tiny", prompt=prompt, max_tokens=30, temperature=1.0, n=3, seed=5,
                                       stop=stop)
    for choice, text in zip(result.choices, texts):
        expected = text[: text.index(stop)] if stop in text else text
        assert choice.text == expected
        assert choice.finish_reason == ("stop" if stop in text else "length")


def test_fields_sent_as_null_take_their_defaults(tiny_server):
    body = {"model": "tiny", "prompt": [1, 2], "max_tokens": 2, "temperature": None, "top_p": None, "n": None,
            "stream": None, "user": "someone", "logit_bias": {}, "stream_options": None}
    r = tiny_server.client.post("/v1/completions", json=body)
    assert r.status_code == 200, r.text
    assert len(r.json()["choices"]) == 1


def test_chat_completion_and_its_stream(client, offline_llm):
    messages = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Say hi"}]
    whole = client.chat.completions.create(model="tiny", messages=messages, max_tokens=10, temperature=0,
                                           logprobs=True, top_logprobs=3)
    text = offline_llm.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    ids = offline_llm.tokenizer.encode(text, add_special_tokens=False)
    offline = offline_llm.generate([ids], SamplingParams(temperature=0, max_tokens=10))[0].outputs[0]
    message = whole.choices[0].message
    assert message.role == "assistant"
    assert message.content == offline_llm.tokenizer.decode(offline.token_ids, skip_special_tokens=True)
    assert len(whole.choices[0].logprobs.content) == 10
    assert all(len(entry.top_logprobs) == 3 for entry in whole.choices[0].logprobs.content)
    chunks = list(client.chat.completions.create(model="tiny", messages=messages, max_tokens=10, temperature=0,
                                                 stream=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == message.content


def test_unknown_model_is_404(client):
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.completions.create(model="gpt-4", prompt="x", max_tokens=1)
