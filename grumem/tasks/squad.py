"""SQuAD QA (RULER qa_1): an answerable SQuAD v2.0 dev question, its gold paragraph among distractor paragraphs, the
other paragraphs of the same article first (as RULER does), then random ones; at most the whole set (about 190K
tokens with SmolLM2's tokenizer), so longer requests get every paragraph."""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

from grumem.tasks.common import Sample
from grumem.tasks.data import read_ruler_json
from grumem.tasks.documents import QADataset, QAItem, make_qa_samples

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


@cache
def squad_dataset() -> QADataset:
    articles = read_ruler_json("squad.json")["data"]
    docs = sorted({p["context"] for article in articles for p in article["paragraphs"]})
    doc_index = {doc: i for i, doc in enumerate(docs)}
    items = []
    for article in articles:
        article_docs = list(dict.fromkeys(doc_index[p["context"]] for p in article["paragraphs"]))
        for paragraph in article["paragraphs"]:
            gold = doc_index[paragraph["context"]]
            related = [d for d in article_docs if d != gold]
            for qa in paragraph["qas"]:
                if not qa["is_impossible"]:
                    answers = list(dict.fromkeys(a["text"] for a in qa["answers"]))
                    items.append(QAItem(qa["question"], answers, [gold], related, frozenset(article_docs)))
    return QADataset(docs, items)


def make_samples(
    task: str, tokenizer: PreTrainedTokenizerBase, num_tokens: int, num_samples: int, seed: int
) -> list[Sample]:
    return make_qa_samples(task, squad_dataset(), tokenizer, num_tokens, num_samples, seed)
