"""The `llavamech` command's entry point: it imports the command line (and with it torch and transformers, seconds
of loading) inside the handler of Ctrl-C, so that an interrupt during that start says one line, not a traceback."""
import sys


def main() -> int:
    try:
        from .cli import main as command
    except KeyboardInterrupt:
        print("llavamech: interrupted", file=sys.stderr)
        return 130
    return command()
