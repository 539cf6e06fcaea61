"""Reading a finished turn: the four tags from a memory turn's output ids, the answer from the answer turn."""
import re
from dataclasses import dataclass


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
            content.append((token_id, p))
        offset += len(p)
    while content and not content[0][1].strip():  # the line breaks around the content are layout, not memory
        content.pop(0)
    while content and not content[-1][1].strip():
        content.pop()
    return [token_id for token_id, _ in content]


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
