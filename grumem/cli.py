"""The `grumem` command line."""
import argparse


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="grumem", description=__doc__)
    parser.parse_args(argv)
