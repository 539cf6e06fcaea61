"""TextFile: block-by-block reading and tokenising gives the chunks of the whole text, in bounded memory."""
import pytest

from grumem.agent import AgentConfig, MemoryAgent
from grumem.tasks import chunk_document
from grumem.tasks.haystack import essay_sentences
from grumem.tasks.text_file import TextFile
from grumem.tasks.user_documents import file_sample, user_sample

ODD_TEXT = "Spaces  and   runs,\ttabs\nnew lines\n\n  indented — café 東京 🚀🧠 naïve λόγος. It's 3.14159, isn't it?"


def write(tmp_path, data: bytes | str, name: str = "doc.txt") -> str:
    path = tmp_path / name
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return str(path)


@pytest.mark.parametrize("block_bytes", [7, 97, 1000, 1 << 14])
def test_chunks_equal_those_of_the_whole_text(tokenizer, tmp_path, block_bytes):
    text = ODD_TEXT + "".join(essay_sentences()[:300]) + ODD_TEXT
    path = write(tmp_path, text)
    whole = tokenizer.encode(text, add_special_tokens=False)
    for chunk_tokens in (64, 1000):
        streamed = list(TextFile(path, block_bytes).chunks(tokenizer, chunk_tokens))
        assert streamed == chunk_document(whole, chunk_tokens)


def test_a_chunk_is_read_without_reading_the_rest_of_the_file(tokenizer, tmp_path):
    path = write(tmp_path, "".join(essay_sentences()) * 2)  # a few MB
    reads = []

    class CountingFile(TextFile):
        def _read(self, offset):
            reads.append(offset)
            return super()._read(offset)

    chunks = CountingFile(path, 1 << 12).chunks(tokenizer, 512)
    next(chunks)
    assert len(reads) <= 2  # 4 KB blocks hold about 1000 tokens


def test_bad_utf8_names_the_file_and_the_byte_even_across_blocks(tokenizer, tmp_path):
    data = ("é" * 50).encode() + b"\xff" + b" more text"
    path = write(tmp_path, data)
    for block_bytes in (7, 64, 1 << 14):
        with pytest.raises(ValueError, match=rf"{path}: not UTF-8 text \(invalid start byte at byte 100\)"):
            TextFile(path, block_bytes).check()
    truncated = write(tmp_path, "ok ".encode() + "€".encode()[:2], "truncated.txt")
    with pytest.raises(ValueError, match="not UTF-8 text .* at byte 3"):
        list(TextFile(truncated, 4).chunks(tokenizer, 16))


def test_the_check_reads_to_the_end(tmp_path):
    """A bad byte after many blocks of good text is found before anything is read."""
    path = write(tmp_path, ("plain words " * 2000).encode() + b"\xfe tail")
    with pytest.raises(ValueError, match="not UTF-8 text .* at byte 24000"):
        TextFile(path, 64).check()


@pytest.mark.parametrize("data", ["", "  \n\t \n"])
def test_a_file_without_text_is_rejected(tmp_path, data):
    path = write(tmp_path, data)
    with pytest.raises(ValueError, match=f"{path}: empty document"):
        file_sample(path, "What?", [])


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(ValueError, match="nowhere.txt: cannot read"):
        file_sample(str(tmp_path / "nowhere.txt"), "What?", [], where="line 3: ")


def test_a_file_reads_as_the_same_text_held_in_memory(tiny_llama_path, tmp_path):
    from grumem.engine import LLM

    llm = LLM(tiny_llama_path, num_kvcache_blocks=256)
    text = "".join(essay_sentences()[:60])
    config = AgentConfig(chunk_tokens=256, gate_prior_threshold=None, exit_gate=False, layout="paper")
    in_memory = user_sample(llm.tokenizer, text, "What is the essay about?", [])
    from_file = file_sample(write(tmp_path, text), "What is the essay about?", [])
    a, b = MemoryAgent(llm, config).run([in_memory, from_file])
    assert a.num_chunks == b.num_chunks == len(chunk_document(in_memory.context_ids, 256)) > 2
    assert [t.prompt_ids for t in a.turns] == [t.prompt_ids for t in b.turns]
    assert a.answer == b.answer and b.error is None


def test_a_file_that_turns_bad_part_way_fails_only_its_document(tiny_llama_path, tmp_path):
    from grumem.engine import LLM

    llm = LLM(tiny_llama_path, num_kvcache_blocks=256)
    text = "".join(essay_sentences()[:400]).encode()
    assert len(text) > 30_000
    path = write(tmp_path, text)
    broken = file_sample(path, "What is the essay about?", [])
    good = user_sample(llm.tokenizer, "".join(essay_sentences()[:60]), "What is the essay about?", [])
    write(tmp_path, text[:30_000] + b"\xff" + text[30_000:])  # changed after it was checked: the second block
    config = AgentConfig(chunk_tokens=256, gate_prior_threshold=None, exit_gate=False, layout="paper")
    bad, fine = MemoryAgent(llm, config).run([broken, good])
    assert "not UTF-8 text" in bad.error and bad.turns  # it read the chunks before the bad byte
    assert fine.error is None and len(fine.memory_turns) == fine.num_chunks
