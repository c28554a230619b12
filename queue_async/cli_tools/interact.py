"""Talking to the operator: confirmations, a progress bar, and the exit codes' exception."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable

__all__ = ["EXIT_NOTHING", "EXIT_REFUSED", "CliError", "Progress", "confirm", "with_progress"]

EXIT_NOTHING = 1
"""Not found, or the action did nothing (a retry of a job that is not dead)."""
EXIT_REFUSED = 4
"""The operator said no, or there was nobody to ask (no terminal) and no ``--yes``."""


class CliError(Exception):
    """A one-line message for stderr and the exit code to leave with."""

    def __init__(self, message: str, code: int = EXIT_NOTHING) -> None:
        super().__init__(message)
        self.code = code


def confirm(question: str, *, yes: bool) -> None:
    """Ask ``question`` on the terminal; ``CliError`` (exit 4) unless the answer is yes.

    With ``yes`` (``--yes``) nothing is asked. Without a terminal on stdin (a script, a pipe)
    there is nobody to ask, so the action is refused rather than taken.
    """
    if yes:
        return
    if not sys.stdin.isatty():
        raise CliError(
            f"refusing to {question} without confirmation (stdin is not a terminal): pass --yes",
            EXIT_REFUSED,
        )
    # On stderr, so that stdout holds only the result (--json). Called from a coroutine, but
    # the command does one thing at a time: nothing else waits on the loop meanwhile.
    sys.stderr.write(f"{question}? [y/N] ")
    sys.stderr.flush()
    answer = sys.stdin.readline()
    if answer.strip().lower() not in ("y", "yes"):
        raise CliError("nothing done", EXIT_REFUSED)


class Progress:
    """A one-line bar on stderr, redrawn in place; silent when stderr is not a terminal."""

    def __init__(self, total: int | None, verb: str) -> None:
        self.total = total
        self.verb = verb
        self.shown = sys.stderr.isatty()

    def update(self, done: int) -> None:
        if not self.shown:
            return
        if self.total:
            filled = min(30, 30 * done // self.total)
            bar = "#" * filled + "-" * (30 - filled)
            sys.stderr.write(f"\r[{bar}] {done}/{self.total} {self.verb}")
        else:
            sys.stderr.write(f"\r{done} {self.verb}")
        sys.stderr.flush()

    def close(self) -> None:
        if self.shown:
            sys.stderr.write("\n")
            sys.stderr.flush()


async def with_progress(
    action: Callable[[Callable[[int], None]], Awaitable[int]], *, total: int | None, verb: str
) -> int:
    """Run a bulk action that reports its progress (``Admin.retry_dead``, ``Admin.purge``:
    steps of one script call each), with a bar on stderr; the number done."""
    progress = Progress(total, verb)
    progress.update(0)
    try:
        return await action(progress.update)
    finally:
        progress.close()
