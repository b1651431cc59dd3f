"""User-facing errors shared by every stage.

The CLI turns these into a one-line message and an exit code; anything else
that escapes is a bug and keeps its traceback.
"""


class SimsearchError(Exception):
    """A problem with the user's input that has a one-line explanation."""

    exit_code = 1


class WriteFailed(SimsearchError):
    """SQLite or FAISS could not write a file (a full or read-only disk): a build removes its partial folder to free the space."""

    exit_code = 1


class DataError(SimsearchError):
    """The input exists but its content is wrong (bad line, empty corpus, broken index)."""

    exit_code = 1


class UsageError(SimsearchError):
    """The invocation is wrong (option names a column that is not there, bad value)."""

    exit_code = 2


class Interrupted(SimsearchError):
    """Long work was stopped (Ctrl-C) after saving progress that a rerun can continue."""

    exit_code = 130
