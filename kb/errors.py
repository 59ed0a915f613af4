"""kb's own error type: the CLI prints its message as one line and exits non-zero."""


class KbError(Exception):
    """An error the user can act on; its message is shown without a traceback."""

    exit_code = 1


class NotFound(KbError):
    """An identifier, file or cache entry that does not exist."""


class ParseError(KbError):
    """Input that could not be parsed (malformed XML, text, lexicon...)."""
