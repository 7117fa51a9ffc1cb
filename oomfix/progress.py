"""A progress line for long reads: on stderr, only when stderr is a terminal, only once a read has taken a while.

The reader counts the bytes it reads (`reader.PROGRESS`, a hook it calls from the reading thread too); this module
turns the count into at most a few updates a second of one `\\r`-rewritten line, and erases the line when the work
ends, so nothing of it is left in the terminal or in a redirected output.
"""
from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import IO

DELAY_S = 2.0  # nothing for reads shorter than this: a progress line that flashes is noise
INTERVAL_S = 0.25  # at most four updates a second


def _size(b: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if b < 1000 or unit == "GB":
            return f"{b:.0f} {unit}" if unit == "B" else f"{b:.1f} {unit}"
        b /= 1000
    return f"{b:.1f} GB"  # pragma: no cover


def total_size(paths: Sequence[str]) -> int | None:
    """Bytes the reads will cover when every input is a plain uncompressed file; None otherwise (stdin, a pipe,
    gzip: the reader counts decompressed bytes)."""
    total = 0
    for p in paths:
        try:
            if p == "-" or not os.path.isfile(p):
                return None
            with open(p, "rb") as f:
                if f.read(2) == b"\x1f\x8b":
                    return None
            total += os.path.getsize(p)
        except OSError:
            return None
    return total


class Progress:
    """Counts bytes (`add`, thread-safe enough for a counter) and shows them from a thread of its own."""

    def __init__(self, what: str, total: int | None, stream: IO[str], delay: float = DELAY_S,
                 interval: float = INTERVAL_S) -> None:
        self.what = what
        self.total = total
        self.stream = stream
        self.delay = delay
        self.interval = interval
        self.done = 0
        self.updates = 0
        self._stop = threading.Event()
        self._shown = False
        self._thread = threading.Thread(target=self._run, name="oomfix-progress", daemon=True)

    def add(self, n: int) -> None:
        self.done += n

    def line(self) -> str:
        if self.total:
            pct = min(100, int(self.done * 100 / self.total))
            return f"oomfix: {self.what}: {_size(self.done)} of {_size(self.total)} ({pct}%)"
        return f"oomfix: {self.what}: {_size(self.done)}"

    def _write(self, s: str) -> None:
        try:
            self.stream.write(s)
            self.stream.flush()
        except (OSError, ValueError):
            self._stop.set()  # the terminal went away: stop showing, never fail the work

    def _run(self) -> None:
        if self._stop.wait(self.delay):
            return
        while not self._stop.is_set():
            self._write("\r\x1b[K" + self.line())
            self._shown = True
            self.updates += 1
            self._stop.wait(self.interval)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        if self._shown:
            self._write("\r\x1b[K")  # erase it: the output that follows starts on a clean line


def wanted(stream: IO[str] | None = None, quiet: bool = False) -> bool:
    stream = stream or sys.stderr
    try:
        return not quiet and stream.isatty() and os.environ.get("TERM") != "dumb"
    except (AttributeError, ValueError):
        return False


@contextmanager
def reading(what: str, paths: Sequence[str] = (), quiet: bool = False,
            stream: IO[str] | None = None, delay: float = DELAY_S, interval: float = INTERVAL_S) -> Iterator[None]:
    """Show a progress line while the body reads logs, if stderr is a terminal and the body takes over `delay`."""
    stream = stream or sys.stderr
    if not wanted(stream, quiet):
        yield
        return
    from oomfix import reader

    prog = Progress(what, total_size(paths) if paths else None, stream, delay, interval)
    previous = reader.PROGRESS
    reader.PROGRESS = prog.add
    prog.start()
    try:
        yield
    finally:
        reader.PROGRESS = previous
        prog.stop()
