"""Shared CLI plumbing: bad input ends with exit status 2 and one line on stderr, no traceback."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from engine.errors import BadInput


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports a bad option as one line and exit status 2 (argparse's own code)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def run_cli(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> None:
    """Run ``main(argv)`` and exit with its status; BadInput becomes one stderr line and exit 2."""
    try:
        rc = main(argv)
    except BadInput as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt as exc:  # jobs.interrupts.Interrupted carries what was saved
        print(str(exc) or "interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(rc or 0)
