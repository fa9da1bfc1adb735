"""The one exception type for bad user input.

Readers and jobs raise :class:`BadInput` with a single line that names the file (and the line or
record where it can) and what is wrong. The CLIs turn it into exit status 2 without a traceback.
"""
from __future__ import annotations


class BadInput(Exception):
    """A user-supplied file, folder or option that cannot be used. ``str(exc)`` is one line."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))  # always one line
