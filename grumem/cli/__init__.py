"""The `grumem` command line; one module per subcommand, each with register / validate / run.

  grumem run                                  NIAH on the embedded SmolLM2, gated loop with exit gate
  grumem ask --doc FILE --question "..."      one document; --batch FILE.jsonl for many at once
  grumem eval --lengths 4096,8192             memagent vs grumem without and with the exit gate, with speed-ups
  grumem serve --port 8000                    an HTTP server: OpenAI's completions and chat, /generate, /v1/memory
  grumem train --warm-start-steps 100 --steps 10 --save DIR
                                              the loop learns its gates: a supervised warm start on labelled
                                              turns, then Multi-Conv DAPO (RL, GRU-Mem's rewards)

Every argument is checked before the model loads: a bad one stops with a one-line message and exit code 2.
"""
import argparse
import sys

from grumem.cli import ask, eval, run, serve, train

SUBCOMMANDS = (run, ask, eval, train, serve)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="grumem", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    for command in SUBCOMMANDS:
        command.register(commands)
    args = parser.parse_args(argv)
    try:
        args.validate(args)
    except (ValueError, OSError) as e:
        print(f"grumem {args.command}: {e}", file=sys.stderr)
        sys.exit(2)
    try:
        args.run(args)
    except (ValueError, FileNotFoundError, ModuleNotFoundError) as e:
        sys.exit(f"grumem {args.command}: {e}")
    except KeyboardInterrupt:
        print(f"grumem {args.command}: interrupted; the documents in flight were aborted", file=sys.stderr)
        sys.exit(130)
