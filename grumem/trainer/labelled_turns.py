"""The turns the gated loop should write, labelled from a document's evidence spans: the warm start's targets.

Each memory turn quotes a sentence of its chunk in <think>: the (first) evidence, else a distractor, else the
sentence that shares the most words with the question (an untrained model quotes some sentence too; the check then
judges the quote). With quoted thoughts (AgentConfig.think "quote") the quote is the chunk's own ids, as decoding
copies them; with free thoughts it is the sentence's text on a line of its own. The turn says <check>yes</check>
exactly on the chunks holding evidence, writes the memory as the evidence sentences read so far, and says
<next>end</next> once the memory holds every piece. With `after_exit`, the chunk after the last evidence is added as
a turn with a full memory (no, end): the exit decision then depends on the memory, not only on the chunk. The answer
turn writes the answers in \\boxed{}. The output ids are written by running the turn format's state machine, so the
forced tags and the masks are those the engine decodes under.
"""
import re
from dataclasses import dataclass

from grumem.agent import AgentConfig, FormatArgs
from grumem.agent.prompts import PromptBuilder
from grumem.agent.quote import sentence_spans
from grumem.agent.turn_format import CHECK, GateGrammar, GateState, THINK, UPDATE
from grumem.engine import TokenRole
from grumem.tasks import Sample, chunk_document
from grumem.tasks.chunking import span_chunks
from grumem.trainer.rows import TrainingRow


def _words(text: str) -> set[str]:
    return {w.lower() for w in re.findall(r"[A-Za-z]{4,}", text)}


def closest_sentence(chunk: list[int], question: str, decode) -> tuple[int, int]:
    """(start, end) in the chunk of the sentence sharing the most words with the question (among equals, one that
    starts with a capital, then the first); `decode(ids)` gives text."""
    asked = _words(question)
    spans = sentence_spans(chunk, lambda i: decode([i]))

    def rank(span):
        text = decode(chunk[span[0]:span[1]]).strip()
        return len(_words(text) & asked), text[:1].isupper()
    return max(spans, key=rank, default=(0, len(chunk)))


def sentence_at(chunk: list[int], start: int, end: int, piece) -> tuple[int, int]:
    """(start, end) of the chunk's first sentence that overlaps tokens [start, end)."""
    return next(span for span in sentence_spans(chunk, piece) if span[1] > start and span[0] < end)


class AmbiguousLabel(ValueError):
    """A document whose turns have no single label (a needle across two chunks): skip it."""


def _one_chunk(spans: list[tuple[int, int]], chunk_tokens: int, what: str) -> list[int]:
    chunks = [span_chunks(start, end, chunk_tokens) for start, end in spans]
    if any(len(c) != 1 for c in chunks):
        raise AmbiguousLabel(f"a {what} straddles two chunks of {chunk_tokens} tokens: its turns have no single label")
    return [c[0] for c in chunks]


def write_turn(grammar: GateGrammar, args: FormatArgs, think_ids: list[int], check: str, memory_ids: list[int],
               next_gate: str) -> tuple[list[int], list[int], list]:
    """(output ids, roles, mask rows) of one memory turn under the turn format `args`; `think_ids` must close the
    thought (a line break, </think>, or the cap; with a quote, the end of a sentence of the section); text past a
    cap is cut there, as decoding would."""
    state = GateState(grammar, args)
    text = {THINK: list(think_ids),
            UPDATE: list(memory_ids) + grammar.tokenizer.encode("</update>", add_special_tokens=False)}
    choices = {CHECK: check, "next": next_gate}
    ids, roles, rows = [], [], []
    while not state.done:
        row, forced = state.next_mask()
        phase = state.phase
        if state.quoting:
            if not text[THINK]:
                raise ValueError("the thought ended before the turn format closed it")
            token = text[THINK].pop(0)
            if token != forced if forced >= 0 else token not in row:
                raise ValueError("the thought is not a sentence of the section: it cannot be quoted")
        elif forced >= 0:
            token = forced
        elif state.choosing:
            token = grammar.options[state.choosing][choices[state.choosing]][0]
        else:
            if not text[phase]:
                raise ValueError(f"the {phase} text ended before the turn format closed it")
            token = text[phase].pop(0)
        roles.append(state.observe(token))
        ids.append(token)
        rows.append(row)
    return ids, roles, rows


def labelled_rows(sample: Sample, config: AgentConfig, prompts: PromptBuilder, grammar: GateGrammar,
                  after_exit: bool = False, thinks=None) -> list[TrainingRow]:
    """The training rows of one document read as its labels say; raises ValueError when a label is ambiguous.
    `thinks(labels)`: the model's own thought per memory turn (ids that close it); they replace the labelled
    quotes and carry no loss, so the gates learn on the thoughts the model writes itself."""
    labels, answer_prompt = turn_labels(sample, config, prompts, after_exit)
    own = thinks(labels) if thinks is not None else None
    rows = []
    for n, label in enumerate(labels):
        think = own[n] if own is not None else label.quote_ids if config.think == "quote" else (
            prompts.encode(prompts.tokenizer.decode(label.quote_ids).strip()) + grammar.newline_ids)
        ids, roles, mask_rows = write_turn(grammar, label.format_args, think, label.check, label.memory_ids,
                                           label.next)
        row = _row(label.prompt_ids, ids, roles, mask_rows, sample, n)
        if own is not None:  # the thought after the forced <think> is the model's: no loss
            start = len(grammar.tag_ids("<think>"))
            row.loss_mask[start:start + len(think)] = [False] * min(len(think), len(ids) - start)
        rows.append(row)
    answer = prompts.encode("\\boxed{" + ", ".join(sample.answers) + "}") + [grammar.eos_token_id]
    rows.append(_row(answer_prompt, answer, [TokenRole.SAMPLED] * len(answer), None, sample, len(rows)))
    return rows


@dataclass(slots=True)
class TurnLabel:
    prompt_ids: list[int]
    format_args: FormatArgs  # the turn format it is decoded under (it quotes the chunk with quoted thoughts)
    quote_ids: list[int]  # the chunk's ids of the sentence quoted
    check: str
    memory_ids: list[int]  # the memory after the turn
    next: str


def turn_labels(sample: Sample, config: AgentConfig, prompts: PromptBuilder,
                after_exit: bool = False) -> tuple[list[TurnLabel], list[int]]:
    """The labelled memory turns of a document and its answer prompt."""
    if not sample.evidence_spans:
        raise ValueError(f"{sample.task} sample {sample.index} has no evidence spans: its gates cannot be labelled")
    if config.memory_format is None or config.memory_format.mode != "format":
        raise ValueError("labelled turns need the gated loop with the full turn format (constraint 'format')")
    chunk_tokens, encode = config.chunk_tokens, prompts.encode
    chunks = chunk_document(sample.context_ids, chunk_tokens)
    evidence_at = _one_chunk(sample.evidence_spans, chunk_tokens, "needle")
    distractor_at = _one_chunk(sample.distractor_spans, chunk_tokens, "distractor")
    decode = prompts.tokenizer.decode
    sentence = lambda span: decode(sample.context_ids[span[0]:span[1]]).strip()  # noqa: E731
    problem, memory, read = encode(sample.question), prompts.no_memory_ids, []
    last = max(evidence_at)
    labels = []
    for k in range(min(len(chunks), last + 1 + after_exit)):
        chunk = chunks[k]
        found = sorted(s for s, at in zip(sample.evidence_spans, evidence_at) if at == k)
        decoys = sorted(s for s, at in zip(sample.distractor_spans, distractor_at) if at == k)
        read += [sentence(s) for s in found]
        if found or decoys:
            first = (found or decoys)[0]
            start, end = sentence_at(chunk, first[0] - k * chunk_tokens, first[1] - k * chunk_tokens,
                                     lambda i: decode([i]))
        else:
            start, end = closest_sentence(chunk, sample.question, decode)
        new_memory = encode(" ".join(read)) if found else memory
        labels.append(TurnLabel(prompts.memory_prompt(problem, memory, chunk), config.section_format(chunk),
                                chunk[start:end], "yes" if found else "no", new_memory,
                                "end" if k >= last else "continue"))
        memory = new_memory
    return labels, prompts.answer_prompt(problem, memory)


def _row(prompt_ids, output_ids, roles, mask_rows, sample: Sample, turn: int) -> TrainingRow:
    return TrainingRow(prompt_ids, output_ids, [r != TokenRole.FORCED for r in roles], [0.0] * len(output_ids),
                       mask_rows, 1.0, sample.index, 0, turn)
