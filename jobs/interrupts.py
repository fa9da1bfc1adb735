"""Ctrl-C for every job: one line saying what was saved and how to resume, exit status 130; a
second Ctrl-C stops at once.

Ray installs its own SIGINT handlers. Train V2's ``TorchTrainer.fit()`` replaces the main
thread's handler with one that aborts its controller and ends the process with status 0 or 1 and
no word of what was kept (``ray/train/v2/api/data_parallel_trainer.py``,
``_register_sigint_handler``; it only does so on the main thread), so :func:`run_in_thread` runs
``fit()`` on a helper thread and Ctrl-C stays ours. Tune's ``Tuner.fit()`` installs one that
stops the experiment gracefully unless ``TUNE_DISABLE_SIGINT_HANDLER`` is set; it stops the same
way on SIGUSR1 (``ray/tune/tune.py``, ``_setup_signal_catching``), which
:func:`forward_to_tune` sends, so the search still saves its state while our handler keeps
count of the presses.
"""
from __future__ import annotations

import os
import shlex
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

EXIT_INTERRUPTED = 130


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, with the one line to print (``jobs.cli.run_cli`` prints ``str(exc)``)."""


def resume_command(module: str, argv: Sequence[str] | None, drop: Sequence[str] = (),
                   add: Sequence[str] = ()) -> str:
    """The command line that continues this invocation: its own arguments without ``drop``
    (e.g. ``--force-new``, which would start over) and with ``add`` (e.g. ``--resume``)."""
    args = [a for a in (sys.argv[1:] if argv is None else argv) if a not in drop]
    args += [a for a in add if a not in args]
    return shlex.join(["python", "-m", module, *args])


@contextmanager
def sigint_guard(on_first: Callable[[], None] | None = None) -> Iterator[dict]:
    """While active, the first SIGINT calls ``on_first`` (default: raise KeyboardInterrupt in the
    main thread) and the second ends the process with status 130 at once, whatever is running
    (cleanup such as ``ray.shutdown()`` included). Yields ``{"count": presses so far}``."""
    state = {"count": 0}
    console = os.dup(2)  # the terminal, even while stderr_to() points fd 2 elsewhere

    def handler(signum, frame):
        state["count"] += 1
        if state["count"] > 1:
            os.write(console, b"interrupted again: stopping now\n")
            os._exit(EXIT_INTERRUPTED)
        if on_first is None:
            raise KeyboardInterrupt
        on_first()

    if threading.current_thread() is not threading.main_thread():
        os.close(console)
        yield state  # signals only reach the main thread; nothing to install
        return
    old = signal.signal(signal.SIGINT, handler)
    try:
        yield state
    finally:
        signal.signal(signal.SIGINT, old)
        os.close(console)


@contextmanager
def stderr_to(path: str | os.PathLike) -> Iterator[None]:
    """Point file descriptor 2 at ``path`` (appending) for a while: stopping Ray after a Ctrl-C
    makes its threads and child processes print tracebacks of the calls it cut short, which
    belong in the run's log, not under the one line the user gets."""
    sys.stderr.flush()
    saved = os.dup(2)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.dup2(fd, 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(fd)


def run_in_thread(fn: Callable[[], object]) -> object:
    """``fn()`` on a daemon helper thread, waited for in short slices so that a Ctrl-C reaches
    the main thread's handler (KeyboardInterrupt raised here) while ``fn`` runs. Re-raises what
    ``fn`` raised."""
    box: dict = {}

    def target():
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            box["error"] = exc

    t = threading.Thread(target=target, name="job-main", daemon=True)
    t.start()
    while t.is_alive():
        t.join(0.2)
    if "error" in box:
        raise box["error"]
    return box.get("value")


def forward_to_tune() -> None:
    """First Ctrl-C of a search: ask Tune to stop and save its state (SIGUSR1, see above)."""
    os.kill(os.getpid(), signal.SIGUSR1)


def disable_tune_sigint() -> None:
    """Keep Tune from replacing our SIGINT handler (it still listens to SIGUSR1)."""
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
