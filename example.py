"""One document, one question: the gated memory loop on the embedded SmolLM2, printing every memory turn.

  .venv/bin/python example.py
"""
from grumem.agent import AgentConfig, MemoryAgent
from grumem.engine import LLM
from grumem.tasks import make_samples

llm = LLM()
sample = make_samples("niah_single_2", llm.tokenizer, num_tokens=3000, num_samples=1, seed=0)[0]
config = AgentConfig(mode="grumem", exit_gate=True, chunk_tokens=1024, memory_tokens=64, max_think_tokens=48)
trajectory = MemoryAgent(llm, config).run([sample])[0]

print(f"question: {sample.question}\ngold: {sample.answers}  evidence in chunk(s) {trajectory.evidence_chunks}\n")
for turn in trajectory.turns:
    where = f"chunk {turn.chunk_index}" if turn.kind == "memory" else "answer"
    print(f"--- {where}: {len(turn.prompt_ids)} prompt tokens ({turn.num_cached_tokens} from cache), "
          f"{len(turn.output_ids)} generated, {turn.seconds:.1f} s")
    print(llm.tokenizer.decode(turn.output_ids, skip_special_tokens=True))
print(f"\nanswer: {trajectory.answer!r}  score: {trajectory.score}  ({trajectory.seconds:.1f} s)")
