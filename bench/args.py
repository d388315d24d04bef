"""What the benchmarks' options take: a count of at least one, or argparse's one-line error (not a traceback from an
empty list of timings)."""
import argparse


def count(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"{n} is too few: give 1 or more")
    return n
