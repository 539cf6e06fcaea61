"""TextOutput's incremental decoding against decoding the whole output at every step."""
import random

import pytest

from grumem.serve.text import TextOutput

TEXT = "Plain words, then multi-byte ones: café, naïve, 東京タワー, emoji 🚀🧠 and a Greek λόγος — done."


def streamed(tokenizer, token_ids, stop, step_sizes):
    """(the deltas streamed, the TextOutput) when the ids arrive in pieces of the given sizes."""
    text, deltas, n = TextOutput(tokenizer, stop), [], 0
    for size in step_sizes:
        n = min(n + size, len(token_ids))
        text.update(token_ids[:n])
        deltas.append(text.delta(final=False))
        if text.stopped or n == len(token_ids):
            break
    deltas.append(text.delta(final=True))
    return deltas, text


@pytest.mark.parametrize("seed", range(4))
def test_streamed_text_equals_the_decode_of_the_whole_output(tokenizer, seed):
    rng = random.Random(seed)
    token_ids = tokenizer.encode(TEXT, add_special_tokens=False)
    rng.shuffle(token_ids)  # arbitrary orders split characters across tokens in ways the text above does not
    token_ids = tokenizer.encode(TEXT, add_special_tokens=False) + token_ids
    deltas, text = streamed(tokenizer, token_ids, [], [rng.randint(1, 3) for _ in token_ids])
    whole = tokenizer.decode(token_ids, skip_special_tokens=True)
    assert text.text == whole
    assert "".join(deltas) == whole
    assert all("\ufffd" not in d for d in deltas[:-1] if "\ufffd" not in whole)


def test_no_partial_character_is_streamed(tokenizer):
    token_ids = tokenizer.encode("🚀🧠東京", add_special_tokens=False)
    assert len(token_ids) > 4  # the characters take several byte tokens each
    deltas, _ = streamed(tokenizer, token_ids, [], [1] * len(token_ids))
    assert "".join(deltas) == "🚀🧠東京"
    assert all("\ufffd" not in d for d in deltas)


@pytest.mark.parametrize("stop", ["東京", "a Greek", "ï", ", then"])
def test_stop_string_across_tokens_cuts_the_text_before_it(tokenizer, stop):
    token_ids = tokenizer.encode(TEXT, add_special_tokens=False)
    deltas, text = streamed(tokenizer, token_ids, [stop], [1] * len(token_ids))
    assert text.stopped
    assert "".join(deltas) == text.text == TEXT[: TEXT.index(stop)]
    kept = text.token_ids  # ends with the token that completed the stop string
    assert stop in tokenizer.decode(kept) and stop not in tokenizer.decode(kept[:-1])


def test_updates_after_a_stop_are_ignored(tokenizer):
    token_ids = tokenizer.encode(TEXT, add_special_tokens=False)
    text = TextOutput(tokenizer, ["words"])
    text.update(token_ids[:6])
    assert text.stopped and text.text == "Plain "
    text.update(token_ids)
    assert text.text == "Plain " and text.delta(final=True) == "Plain "
