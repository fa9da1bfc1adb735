"""Shared CLI plumbing: bad input ends with exit status 2 and one line on stderr, no traceback;
``--help`` shows every option's default.

Job modules import only light modules at the top (no torch, Ray, PyG, pandas or pyarrow), so that
``--help`` and a bad option answer at once; the heavy imports happen after parsing.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from engine.errors import BadInput


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends ``(default: ...)`` to an option's help, except for a switch (``store_true``), an
    option without a default value (``None``: its help says what happens without it) and help that
    already names its default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.nargs == 0 or action.default in (None, "") or "default" in text:
            return text
        return super()._get_help_string(action)


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports a bad option as one line and exit status 2 (argparse's own code),
    and shows defaults in ``--help`` (:class:`HelpFormatter`; sub-parsers inherit both)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

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
