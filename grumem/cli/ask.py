"""grumem ask: answers questions about your own UTF-8 documents, one (--doc, --question) or a JSONL batch; a bad
batch line gets its own error record and the others are answered."""
import json

from grumem.agent import MemoryAgent
from grumem.cli.common import add_agent_args, add_engine_args, agent_config, check_engine_args, make_llm, trajectory_record
from grumem.tasks.user_documents import (batch_sample, check_answers, check_question, read_batch, read_document,
                                         user_sample)


def register(commands) -> None:
    p = commands.add_parser("ask", help="answer questions about your own UTF-8 documents")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--doc", help="a UTF-8 text file")
    source.add_argument("--batch", help='JSONL: {"document": path | "context": text, "question": ..., "answers": [...]}')
    p.add_argument("--question", help="with --doc")
    p.add_argument("--answers", nargs="*", help="with --doc: gold answers, to score the answer")
    add_engine_args(p)
    add_agent_args(p)
    p.set_defaults(validate=validate, run=run)


def validate(args) -> None:
    """Reads the inputs now, so a missing or unreadable file stops before the model loads."""
    if args.doc is not None:
        if args.question is None:
            raise ValueError("--doc needs --question")
        args.inputs = [(None, {"context": read_document(args.doc), "question": check_question(args.question),
                               "answers": check_answers(args.answers)})]
    else:
        if args.question is not None or args.answers is not None:
            raise ValueError("--question and --answers go with --doc; a batch line carries its own")
        args.inputs = read_batch(args.batch)
    agent_config(args)
    check_engine_args(args)


def run(args) -> None:
    llm = make_llm(args)
    samples, records = [], {}
    for i, (number, item) in enumerate(args.inputs):
        try:
            if isinstance(item, ValueError):
                raise item
            sample = (user_sample(llm.tokenizer, item["context"], item["question"], item["answers"], i)
                      if number is None else batch_sample(llm.tokenizer, item, number, i))
            samples.append(sample)
        except ValueError as e:
            question = None if isinstance(item, ValueError) else item["question"]
            records[i] = {"question": question, "answer": None, "error": str(e)}
    for sample, t in zip(samples, MemoryAgent(llm, agent_config(args)).run(samples, progress=not args.json)):
        records[sample.index] = trajectory_record(sample, t)
    for i, (number, _) in enumerate(args.inputs):
        record = records[i] if number is None else {"line": number, **records[i]}
        print(json.dumps(record) if args.json else describe(record))


def describe(record: dict) -> str:
    verdict = "" if "correct" not in record else ("  [correct]" if record["correct"] else "  [wrong]")
    answer = record["answer"] if not record["error"] else "ERROR: " + record["error"]
    return f"Q: {record['question']}\nA: {answer}{verdict}\n"
