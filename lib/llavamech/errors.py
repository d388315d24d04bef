"""One error type for bad input: its message is a single line that says what is wrong and what to do."""


class LlavamechError(ValueError):
    """Raised for bad input; the CLI prints the message alone and exits with status 2."""
