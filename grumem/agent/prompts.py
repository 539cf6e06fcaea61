"""Prompt templates of the memory loop as pre-tokenised pieces.

Prompts are assembled from token ids (template pieces + question + memory + chunk), never from re-encoded text, so
the memory a turn wrote reaches the next prompt as the exact ids the model produced. Template text sits inside the
model's own chat template (found by rendering a marker message), so any chat model works.
"""
import re

NO_MEMORY = "No previous memory"

# A memory-turn template is blocks joined by blank lines; a layout orders the problem, memory and section blocks.
PROBLEM, MEMORY = "<problem>\n{problem}\n</problem>", "<memory>\n{memory}\n</memory>"
SECTION = "<section>\n{chunk}\n</section>"
LAYOUTS = {
    "paper": ("problem", "memory", "section"),  # the paper's order: [instruction, problem, memory] is cached
    # the question follows the section it is asked about: its likelihood there is the gate prior's evidence, and
    # the G rollouts of a group share the prefill of [instruction, section, problem]
    "chunk_first": ("section", "problem", "memory"),
}
# MemAgent's published templates (a protocol constant; note the space after <problem>)
MEMAGENT_INTRO = (
    "You are presented with a problem, a section of an article that may contain the answer to the problem, and a "
    "previous memory. Please read the provided section carefully and update the memory with the new information "
    "that helps to answer the problem. Be sure to retain all relevant details from the previous memory while adding "
    "any new, useful information."
)
MEMAGENT_BLOCKS = {"problem": "<problem> \n{problem}\n</problem>", "memory": MEMORY, "section": SECTION}
MEMAGENT_OUTRO = "Updated memory:\n"
FINAL_ANSWER = (
    "You are presented with a problem and a previous memory. Please answer the problem based on the previous memory "
    "and put the answer in \\boxed{{}}.\n\n<problem> \n{problem}\n</problem>\n\n<memory>\n{memory}\n</memory>\n\n"
    "Your answer:\n"
)
# Our GRU-Mem wording (the paper's is not public). The tags are described, not shown filled in: small models copy
# example text inside tags verbatim. Asking for a quote in <think> makes SmolLM2-135M copy the evidence sentence
# there, and then into the memory.
GRUMEM_INTRO = (
    "You are presented with a problem, a section of an article that may contain the answer to the problem, and a "
    "previous memory. Please read the provided section carefully."
)
GRUMEM_BLOCKS = {"problem": PROBLEM, "memory": MEMORY, "section": SECTION}
GRUMEM_OUTRO = (
    "Reply with four tags. In <think></think>, quote the sentence of the section that is about the problem. In "
    "<check></check>, write yes if the section contains the answer to the problem, otherwise no. In <next></next>, "
    "write end if the memory contains the answer to the problem, otherwise continue. In <update></update>, write the "
    "new memory: the sentence that answers the problem."
)


def memory_template(mode: str, layout: str) -> str:
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {tuple(LAYOUTS)}, got {layout!r}")
    intro, blocks, outro = ((MEMAGENT_INTRO, MEMAGENT_BLOCKS, MEMAGENT_OUTRO) if mode == "memagent"
                            else (GRUMEM_INTRO, GRUMEM_BLOCKS, GRUMEM_OUTRO))
    return "\n\n".join([intro, *(blocks[name] for name in LAYOUTS[layout]), outro])


class PromptBuilder:
    """Templates split at their fields into token-id pieces, once per tokenizer."""

    def __init__(self, tokenizer, mode: str, layout: str = "paper"):
        self.tokenizer = tokenizer
        self.memory_pieces = self._pieces(memory_template(mode, layout))
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
    def _fill(pieces: list, fields: dict[str, list[int]]) -> tuple[list[int], dict[str, tuple[int, int]]]:
        """The ids, and the (start, end) span of each field in them."""
        ids, spans = [], {}
        for piece in pieces:
            if isinstance(piece, str):
                spans[piece] = (len(ids), len(ids) + len(fields[piece]))
                piece = fields[piece]
            ids += piece
        return ids, spans

    def memory_prompt(self, problem: list[int], memory: list[int], chunk: list[int]) -> list[int]:
        return self.scored_memory_prompt(problem, memory, chunk)[0]

    def scored_memory_prompt(self, problem: list[int], memory: list[int], chunk: list[int]):
        """(memory-turn prompt ids, span of the problem in them): the span the gate prior scores."""
        ids, spans = self._fill(self.memory_pieces, {"problem": problem, "memory": memory, "chunk": chunk})
        return ids, spans["problem"]

    def answer_prompt(self, problem: list[int], memory: list[int]) -> list[int]:
        return self._fill(self.answer_pieces, {"problem": problem, "memory": memory})[0]

    def document_prefix(self, problem: list[int]) -> list[int]:
        """The start of every memory prompt of a document, up to the first field that changes between its turns
        (pinned while the document is read)."""
        end = next(i for i, piece in enumerate(self.memory_pieces) if piece in ("memory", "chunk"))
        return self._fill(self.memory_pieces[:end], {"problem": problem})[0]
