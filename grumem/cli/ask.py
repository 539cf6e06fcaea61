"""grumem ask: answers questions about your own UTF-8 documents, one (--doc, --question) or a JSONL batch; a bad
batch line gets its own error record and the others are answered. With --out, each record is written as soon as
its document finishes, and --resume continues a run that was killed or interrupted (Ctrl-C aborts the documents in
flight and records them as aborted; a resumed run reads them again)."""
import json

from grumem.cli.backend import add_replica_args, check_replica_args, make_backend
from grumem.cli.common import add_agent_args, add_engine_args, agent_config, check_engine_args, trajectory_record
from grumem.cli.results_file import ResultsFile
from grumem.tasks.user_documents import BatchLine, batch_sample, file_sample, read_batch


def register(commands) -> None:
    p = commands.add_parser("ask", help="answer questions about your own UTF-8 documents")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--doc", help="a UTF-8 text file")
    source.add_argument("--batch", help='JSONL: {"document": path | "context": text, "question": ..., "answers": [...]}')
    p.add_argument("--question", help="with --doc")
    p.add_argument("--answers", nargs="*", help="with --doc: gold answers, to score the answer")
    p.add_argument("--out", metavar="RESULTS.jsonl", help="with --batch: a record per line, written as it finishes")
    p.add_argument("--resume", action="store_true", help="with --out: skip the lines it already holds an outcome for")
    add_engine_args(p)
    add_agent_args(p)
    add_replica_args(p)
    p.set_defaults(validate=validate, run=run)


def validate(args) -> None:
    """Reads the inputs now, so a missing or unreadable file stops before the model loads."""
    if args.doc is not None:
        if args.question is None:
            raise ValueError("--doc needs --question")
        if args.out is not None:
            raise ValueError("--out goes with --batch")
        args.doc_sample = file_sample(args.doc, args.question, args.answers)  # the file checked once, here
        item = {"document": args.doc, "question": args.doc_sample.question, "answers": args.doc_sample.answers}
        args.inputs = [BatchLine(0, "", item)]
    else:
        if args.question is not None or args.answers is not None:
            raise ValueError("--question and --answers go with --doc; a batch line carries its own")
        args.inputs = read_batch(args.batch)
    if args.resume and args.out is None:
        raise ValueError("--resume needs --out")
    args.results = ResultsFile(args.out, args.resume) if args.out else None
    agent_config(args)
    check_engine_args(args)
    check_replica_args(args)


def run(args) -> None:
    backend = make_backend(args)
    results = args.results
    if results is not None:
        results.open({(line.number, line.digest) for line in args.inputs})
    todo = [line for line in args.inputs if results is None or (line.number, line.digest) not in results.done]
    records: dict[int, dict] = {}

    def emit(line: BatchLine, record: dict, status: str) -> None:
        if args.batch is not None:
            record = {"line": line.number, "hash": line.digest, "status": status, **record}
        records[line.number] = record
        if results is not None:
            results.write(record)

    try:
        samples, lines = [], []
        for line in todo:
            try:
                if isinstance(line.item, ValueError):
                    raise line.item
                item = line.item
                samples.append(batch_sample(backend.tokenizer, item, line.number, len(samples)) if args.batch
                               else args.doc_sample)
                lines.append(line)
            except ValueError as e:
                question = None if isinstance(line.item, ValueError) else line.item["question"]
                emit(line, {"question": question, "answer": None, "error": str(e)}, "error")
        backend.run(agent_config(args), samples, progress=not args.json, on_finish=lambda t: emit(
            lines[t.sample_index], trajectory_record(samples[t.sample_index], t), status(t)))
    finally:
        if results is not None:
            results.close()
    for line in todo:
        print(json.dumps(records[line.number]) if args.json else describe(records[line.number]))


def status(t) -> str:
    return "aborted" if t.aborted else "error" if t.error is not None else "answered"


def describe(record: dict) -> str:
    verdict = "" if "correct" not in record else ("  [correct]" if record["correct"] else "  [wrong]")
    answer = record["answer"] if not record["error"] else "ERROR: " + record["error"]
    return f"Q: {record['question']}\nA: {answer}{verdict}\n"
