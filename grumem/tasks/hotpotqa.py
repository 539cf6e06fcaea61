"""RULER-HotpotQA (MemAgent's RULER-HQA): a HotpotQA dev question, its two gold paragraphs (those named in
supporting_facts) as "{title}\\n{text}" documents among distractor paragraphs drawn from other questions' contexts."""

from __future__ import annotations

from collections import defaultdict
from functools import cache
from typing import TYPE_CHECKING

from grumem.tasks.common import Sample
from grumem.tasks.data import read_ruler_json
from grumem.tasks.documents import QADataset, QAItem, make_qa_samples

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


def _body(title: str, sentences: list[str]) -> str:
    return f"{title}\n{''.join(sentences)}"  # sentences after the first carry their leading space


@cache
def hotpotqa_dataset() -> QADataset:
    raw = read_ruler_json("hotpotqa.json")
    docs = sorted({_body(title, sentences) for item in raw for title, sentences in item["context"]})
    doc_index = {doc: i for i, doc in enumerate(docs)}
    by_title: dict[str, list[int]] = defaultdict(list)  # 54 titles have two versions of their text
    for doc, i in doc_index.items():
        by_title[doc.split("\n", 1)[0]].append(i)
    items = []
    for item in raw:
        gold_titles = dict.fromkeys(title for title, _ in item["supporting_facts"])
        gold = [doc_index[_body(t, s)] for t in gold_titles for title, s in item["context"] if title == t]
        excluded = frozenset(i for title, _ in item["context"] for i in by_title[title])
        items.append(QAItem(item["question"], [item["answer"]], gold, [], excluded))
    return QADataset(docs, items)


def make_samples(
    task: str, tokenizer: PreTrainedTokenizerBase, num_tokens: int, num_samples: int, seed: int
) -> list[Sample]:
    return make_qa_samples(task, hotpotqa_dataset(), tokenizer, num_tokens, num_samples, seed)
