"""The one base class of every user error.

A user error is bad input or a request the machine cannot meet: its message is one line
(which field, what was wrong, what is allowed), and the CLI prints it and exits 2 with
nothing in a run directory changed. Each layer subclasses it (ConfigError, DataError,
JournalError, ...), so the CLI catches one class, not a list that must be kept in step.
"""
from __future__ import annotations


class UserError(ValueError):
    """A one-line user error; the CLI maps it to exit code 2."""


def first_line(e: BaseException) -> str:
    """An exception as one line of a user error: its message's first line, or its type."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
