"""The baseline: the MemAgent loop written the plain way with Hugging Face transformers `generate`.

One document at a time, one turn at a time, no prefix cache, the same prompts (MemAgent's templates, built from the
same token pieces), model, chunking and questions as grumem's memagent mode.
"""
import time

import torch

from grumem.agent.parsing import extract_answer
from grumem.agent.prompts import PromptBuilder
from grumem.tasks import Sample, chunk_document, score


def generate_ids(model, prompt: list[int], max_new_tokens: int, eos_token_id: int) -> list[int]:
    with torch.inference_mode():
        out = model.generate(torch.tensor([prompt]), max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=eos_token_id)
    ids = out[0, len(prompt):].tolist()
    return ids[:-1] if ids and ids[-1] == eos_token_id else ids


def memagent_hf(model, tokenizer, samples: list[Sample], chunk_tokens: int, memory_tokens: int,
                answer_tokens: int) -> list[dict]:
    prompts = PromptBuilder(tokenizer, "memagent")
    eos = tokenizer.eos_token_id
    results = []
    for sample in samples:
        start = time.perf_counter()
        question, memory = prompts.encode(sample.question), prompts.no_memory_ids
        for chunk in chunk_document(sample.context_ids, chunk_tokens):
            memory = generate_ids(model, prompts.memory_prompt(question, memory, chunk), memory_tokens, eos)
        text = tokenizer.decode(generate_ids(model, prompts.answer_prompt(question, memory), answer_tokens, eos))
        answer, _ = extract_answer(text)
        results.append({"answer": answer, "score": score(sample, answer), "seconds": time.perf_counter() - start})
    return results
