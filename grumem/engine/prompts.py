"""Prompt templates of the memory loop as pre-tokenised pieces, and parsing of a turn's output ids.

Prompts are assembled from token ids (template pieces + question + memory + chunk), never from re-encoded text, so
the memory a turn wrote reaches the next prompt as the exact ids the model produced. Template text sits inside the
model's own chat template (found by rendering a marker message), so any chat model works.
"""
import re
from dataclasses import dataclass

NO_MEMORY = "No previous memory"

# MemAgent's published templates (a protocol constant; note the space after <problem>)
MEMAGENT_MEMORY = (
    "You are presented with a problem, a section of an article that may contain the answer to the problem, and a "
    "previous memory. Please read the provided section carefully and update the memory with the new information "
    "that helps to answer the problem. Be sure to retain all relevant details from the previous memory while adding "
    "any new, useful information.\n\n<problem> \n{problem}\n</problem>\n\n<memory>\n{memory}\n</memory>\n\n"
    "<section>\n{chunk}\n</section>\n\nUpdated memory:\n"
)
FINAL_ANSWER = (
    "You are presented with a problem and a previous memory. Please answer the problem based on the previous memory "
    "and put the answer in \\boxed{{}}.\n\n<problem> \n{problem}\n</problem>\n\n<memory>\n{memory}\n</memory>\n\n"
    "Your answer:\n"
)
# Our GRU-Mem wording (the paper's is not public). The tags are described, not shown filled in: small models copy
# example text inside tags verbatim. The instructions come last, nearest to where the model writes.
GRUMEM_INSTRUCTION = (
    "You are presented with a problem, a section of an article that may contain the answer to the problem, and a "
    "previous memory. Please read the provided section carefully.\n\n<problem>\n{problem}\n</problem>\n\n"
    "<memory>\n{memory}\n</memory>\n\n<section>\n{chunk}\n</section>\n\n"
    "Reply with four tags. In <think></think>, write one short sentence about what the section says about the "
    "problem. In <check></check>, write yes if the section contains the answer to the problem, otherwise no. In "
    "<update></update>, write the updated memory: the sentences from the section and the previous memory that answer "
    "the problem. In <next></next>, write end if the memory contains the answer to the problem, otherwise continue."
)
LAYOUTS = ("paper", "chunk_first")  # (problem, memory, chunk) or (problem, chunk, memory)


class PromptBuilder:
    """Templates split at their fields into token-id pieces, once per tokenizer."""

    def __init__(self, tokenizer, mode: str, layout: str = "paper"):
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
        self.tokenizer = tokenizer
        memory_template = MEMAGENT_MEMORY if mode == "memagent" else GRUMEM_INSTRUCTION
        if layout == "chunk_first":
            memory_template = _swap_memory_and_chunk(memory_template)
        self.memory_pieces = self._pieces(memory_template)
        self.answer_pieces = self._pieces(FINAL_ANSWER)
        self.no_memory_ids = self.encode(NO_MEMORY)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def _pieces(self, template: str) -> list[list[int] | str]:
        """Alternating literal ids and field names, inside the chat template's user turn."""
        marker = "\x00FIELDS\x00"
        chat = self.tokenizer.apply_chat_template([{"role": "user", "content": marker}], add_generation_prompt=True,
                                                  tokenize=False)
        before, after = chat.split(marker)
        parts = re.split(r"\{(\w+)\}", before + template.replace("{{}}", "\x01") + after)
        return [self.encode(p.replace("\x01", "{}")) if i % 2 == 0 else p for i, p in enumerate(parts)]

    @staticmethod
    def _fill(pieces: list, fields: dict[str, list[int]]) -> list[int]:
        return [t for piece in pieces for t in (fields[piece] if isinstance(piece, str) else piece)]

    def memory_prompt(self, problem: list[int], memory: list[int], chunk: list[int]) -> list[int]:
        return self._fill(self.memory_pieces, {"problem": problem, "memory": memory, "chunk": chunk})

    def answer_prompt(self, problem: list[int], memory: list[int]) -> list[int]:
        return self._fill(self.answer_pieces, {"problem": problem, "memory": memory})

    def question_prefix(self, problem: list[int]) -> list[int]:
        """The start of every memory prompt of a document, through the problem (pinned while it is read)."""
        end = self.memory_pieces.index("problem") + 2  # the field and the literal after it
        return self._fill(self.memory_pieces[:end], {"problem": problem})


def _swap_memory_and_chunk(template: str) -> str:
    memory = "<memory>\n{memory}\n</memory>"
    section = "<section>\n{chunk}\n</section>"
    return template.replace(memory, "\x02").replace(section, memory).replace("\x02", section)


@dataclass
class Turn:
    """A memory turn's output, parsed from its ids."""

    check: str | None  # "yes" / "no", None when the tag is missing
    next: str | None  # "continue" / "end", None when missing
    memory_ids: list[int] | None  # the <update> content ids; None when missing
    well_formed: bool


def parse_turn(ids: list[int], piece) -> Turn:
    """Reads the four tags from output ids; `piece(id)` gives a token's text. Lenient: any missing tag is None."""
    pieces = [piece(t) for t in ids]
    text = "".join(pieces)
    check = re.search(r"<check>\s*(yes|no)\s*</check>", text)
    nxt = re.search(r"<next>\s*(continue|end)\s*</next>", text)
    memory_ids = _tag_content_ids(ids, pieces, text, "<update>", "</update>")
    well_formed = bool(re.search(r"</think>", text)) and bool(check and nxt) and memory_ids is not None
    return Turn(check.group(1) if check else None, nxt.group(1) if nxt else None, memory_ids, well_formed)


def _tag_content_ids(ids: list[int], pieces: list[str], text: str, open_tag: str, close_tag: str) -> list[int] | None:
    start = text.find(open_tag)
    end = text.find(close_tag, start + len(open_tag)) if start >= 0 else -1
    if start < 0 or end < 0:
        return None
    start += len(open_tag)
    content, offset = [], 0
    for token_id, p in zip(ids, pieces):
        if offset >= start and offset + len(p) <= end:  # tokens wholly inside the tags
            content.append(token_id)
        offset += len(p)
    return content


def extract_answer(text: str) -> tuple[str, bool]:
    """(answer, whether it came inside \\boxed{}): the boxed content, else the whole reply, stripped."""
    boxed = extract_boxed(text)
    return (boxed if boxed is not None else text).strip(), boxed is not None


def extract_boxed(text: str) -> str | None:
    """The content of the last \\boxed{...}, braces balanced; None when there is none."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, i = 1, start + len("\\boxed{")
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i:j]
    return text[i:]  # unclosed: what was written
