"""One attempt of `oomfix run`: the child process that runs CMD, and the supervisor's terminal.

The child runs in its own session (setsid: a closed terminal's SIGHUP cannot reach it), with stdin from /dev/null
and stdout and stderr to the attempt's own log file, and dies with its supervisor (PR_SET_PDEATHSIG). While it runs,
its log is copied to the supervisor's terminal for as long as that terminal lasts (a terminal that went away stops
the copy, never the supervisor). On a signal to the supervisor the child's process group gets SIGTERM, then SIGKILL
after the grace period; processes an attempt leaves behind (a worker that outlived torchrun) are stopped before the
next attempt, since they would hold its port and its GPU.
"""
from __future__ import annotations

import errno
import os
import select
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from oomfix.errors import InputError, UsageError

POLL_SECONDS = 0.1


@dataclass(frozen=True)
class Launch:
    """What one attempt runs: the argv, and the environment variables it sets on top of the supervisor's."""

    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)

    def shown(self) -> str:
        """The attempt's command as a shell would take it, its environment first (the ledger's `command`)."""
        return " ".join([f"{k}={shlex.quote(v)}" for k, v in self.env.items()] + [shlex.join(self.argv)])


# --- the terminal: echo while it lasts ----------------------------------------------------------------------------

class Terminal:
    """The supervisor's stdout/stderr. When the terminal goes away, writes fail with EIO (a hung-up tty) or EPIPE (a
    closed pipe): from then on nothing is echoed, and the descriptors point at /dev/null so that no later write
    (the interpreter's own flush at exit included) can raise."""

    GONE = (errno.EIO, errno.EPIPE, errno.ENXIO, errno.EBADF, errno.ENOTCONN)
    CHUNK = 4096  # PIPE_BUF: a pipe select() calls writable takes this much without blocking
    WAIT = 0.2  # how long one write may wait for a slow reader before the echo is dropped

    def __init__(self, out_fd: int = 1, err_fd: int = 2, prog: str = "oomfix run") -> None:
        self.prog = prog  # the command whose lines these are: `oomfix verdict --write` says what `run` would
        self.alive = True
        self.fds = (out_fd, err_fd)
        self.dropped = 0  # bytes of echo a stalled reader did not take (the log file has them all)

    def _write(self, fd: int, data: bytes) -> None:
        # never block: a reader that stopped reading (a stalled pipe, a suspended pager) must not keep the
        # supervisor from seeing the job end or from acting on SIGTERM
        if not self.alive:
            return
        try:
            while data:
                if not select.select([], [fd], [], self.WAIT)[1]:
                    self.dropped += len(data)
                    return
                n = os.write(fd, data[: self.CHUNK])
                data = data[n:]
        except BlockingIOError:
            return
        except ValueError:  # a descriptor select() cannot watch: write as before
            try:
                os.write(fd, data)
            except OSError:
                pass
            return
        except OSError as e:
            if e.errno not in self.GONE:
                raise
            self.hang_up()

    def hang_up(self) -> None:
        """The terminal is gone: echo nothing more, and point the descriptors at /dev/null."""
        self.alive = False
        try:
            null = os.open(os.devnull, os.O_WRONLY)
            for fd in self.fds:
                os.dup2(null, fd)
            os.close(null)
        except OSError:
            pass

    def out(self, data: bytes) -> None:
        """Copy the job's output (bytes of its log) to stdout."""
        self._write(self.fds[0], data)

    def say(self, text: str) -> None:
        """One line of the supervisor's own, on stderr."""
        if self.prog != "oomfix run" and text.startswith("oomfix run:"):
            # the remedies speak as `oomfix run`; under `oomfix verdict --write` the lines are that command's
            text = self.prog + text[len("oomfix run"):]
        self._write(self.fds[1], (text if text.endswith("\n") else text + "\n").encode("utf-8", errors="replace"))


# --- processes ----------------------------------------------------------------------------------------------------

def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time) of a process, from /proc; None when it is gone or not visible."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    rest = data[data.rindex(b")") + 2:].split()
    if rest[0] in (b"Z", b"X"):
        return None  # a zombie has no memory, ports or GPUs left: nothing to stop
    return int(rest[1]), int(rest[19])


def descendants(root: int) -> set[tuple[int, int]]:
    """Every live process below `root`, as (pid, start time) so that a recycled pid is never mistaken for it."""
    table: dict[int, tuple[int, int]] = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return set()
    for name in names:
        if name.isdigit():
            st = _stat(int(name))
            if st is not None:
                table[int(name)] = st
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    out: set[tuple[int, int]] = set()
    todo = list(children.get(root, ()))
    while todo:
        pid = todo.pop()
        out.add((pid, table[pid][1]))
        todo.extend(children.get(pid, ()))
    return out


def _alive(procs: set[tuple[int, int]]) -> set[tuple[int, int]]:
    return {(p, t) for p, t in procs if (st := _stat(p)) is not None and st[1] == t}


def _signal_all(procs: set[tuple[int, int]], sig: int) -> None:
    for pid, _ in _alive(procs):
        try:
            os.kill(pid, sig)
        except OSError:
            pass


def _reap(procs: set[tuple[int, int]], skip: int) -> None:
    for pid, _ in procs:
        if pid != skip:
            try:
                os.waitpid(pid, os.WNOHANG)
            except OSError:
                pass


def _load_prctl() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _load_prctl()  # looked up before any fork: nothing is loaded between fork and exec
PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36


def subreaper(on: bool) -> None:
    """Orphaned workers (torchrun starts each in its own session; when torchrun dies they go to init) are re-parented
    to the supervisor instead, so that it can still find and stop them."""
    if _PRCTL is not None:
        _PRCTL(PR_SET_CHILD_SUBREAPER, 1 if on else 0, 0, 0, 0)


def _child_setup(parent: int) -> Any:
    def setup() -> None:  # pragma: no cover - runs in the child between fork and exec
        # SIG_IGN survives exec: the job gets the default actions back (its own session already shields it)
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
        signal.signal(signal.SIGTTOU, signal.SIG_DFL)
        # the job dies with its supervisor: a SIGKILLed `oomfix run` must not leave torchrun training unsupervised.
        # SIGTERM, not SIGKILL: torchrun's handler then stops its workers (which live in sessions of their own)
        if _PRCTL is not None:
            _PRCTL(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
            if os.getppid() != parent:  # the supervisor died between fork and prctl
                os.kill(os.getpid(), signal.SIGTERM)

    return setup


def exit_status(returncode: int) -> int:
    """Popen's -N (killed by signal N) in the shell's convention, 128 + N."""
    return 128 - returncode if returncode < 0 else returncode


# --- one attempt --------------------------------------------------------------------------------------------------

class Child:
    """One attempt's process tree, from its start to its end: its output copied to the terminal while it runs, the
    supervisor's signal passed on to it, and whatever it left behind stopped after it."""

    def __init__(self, term: Terminal, grace: float, foreign: set[tuple[int, int]],
                 stop_sig: Callable[[], int | None], hurry: Callable[[], bool]) -> None:
        self.term = term
        self.grace = grace
        self.foreign = foreign  # processes of ours that are not the job's (an embedding program's)
        self.stop_sig = stop_sig  # the signal the supervisor got, or None: the job is stopped when it is set
        self.hurry = hurry  # a second signal: no more grace

    def _launch(self, launch: Launch, log: str) -> subprocess.Popen[bytes]:
        env = {**os.environ, **launch.env}
        try:
            Path(log).parent.mkdir(parents=True, exist_ok=True)
            out = open(log, "wb")
        except OSError as e:
            raise InputError(f"{log}: cannot write the log: {e.strerror}") from None
        with out:
            try:
                return subprocess.Popen(list(launch.argv), stdin=subprocess.DEVNULL, stdout=out,
                                        stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                        preexec_fn=_child_setup(os.getpid()))
            except OSError as e:
                raise UsageError(f"{launch.argv[0]}: cannot run it: {e.strerror}") from None

    def _echo_from(self, f: Any) -> None:
        while True:
            chunk = f.read(1 << 20)
            if not chunk:
                return
            self.term.out(chunk)

    def _ours(self) -> set[tuple[int, int]]:
        """The job's processes: everything below the supervisor (orphans come back to it as the subreaper) that was
        not there before the run."""
        return descendants(os.getpid()) - self.foreign

    def _stop(self, proc: subprocess.Popen[bytes]) -> None:
        """SIGTERM to the job's process group, `grace` seconds, then SIGKILL to whatever of it is left (workers that
        torchrun started in sessions of their own included)."""
        sig = self.stop_sig()
        assert sig is not None
        self.term.say(f"oomfix run: {signal.Signals(sig).name}: stopping the job (SIGTERM to its process group, "
                      f"SIGKILL after {self.grace:g} s or a second signal)")
        known = self._ours()
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except OSError:
            pass
        deadline = time.monotonic() + self.grace
        while time.monotonic() < deadline:
            known |= self._ours()
            if proc.poll() is not None and not _alive(known):
                break
            if self.hurry():
                self.term.say("oomfix run: a second signal: SIGKILL now")
                break
            time.sleep(POLL_SECONDS)
        else:
            self.term.say("oomfix run: the grace period is over: SIGKILL")
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
        _signal_all(known, signal.SIGKILL)
        proc.wait()
        _reap(known, proc.pid)

    def _leftovers(self, proc: subprocess.Popen[bytes]) -> None:
        """Processes an attempt left behind (a worker that outlived torchrun) would hold the port and the GPU that
        the next attempt needs: SIGTERM, a short wait, SIGKILL."""
        left = _alive(self._ours())
        if not left:
            return
        self.term.say(f"oomfix run: stopping {len(left)} process(es) the attempt left behind")
        _signal_all(left, signal.SIGTERM)
        deadline = time.monotonic() + min(self.grace, 5.0)
        while _alive(left) and time.monotonic() < deadline:
            _reap(left, proc.pid)
            time.sleep(POLL_SECONDS)
        _signal_all(left, signal.SIGKILL)
        time.sleep(POLL_SECONDS)
        _reap(left, proc.pid)

    def run(self, launch: Launch, log: str) -> tuple[int, bool]:
        """(exit status, stopped by a signal to the supervisor)."""
        proc = self._launch(launch, log)
        stopped = False
        with open(log, "rb") as f:
            while True:
                rc = proc.poll()
                self._echo_from(f)
                if rc is not None:
                    break
                if self.stop_sig() is not None:
                    self._stop(proc)
                    stopped = True
                    self._echo_from(f)
                    break
                time.sleep(POLL_SECONDS)
        if not stopped:
            self._leftovers(proc)
        assert proc.returncode is not None
        return exit_status(proc.returncode), stopped

