"""The run ledger, `.oomfix/runs.jsonl`: one JSON object per attempt of `oomfix run`, appended when it ends, and a
`started` record appended before it is launched (a supervisor killed with SIGKILL still leaves a trace).

The ledger lives in the project's `.oomfix/` beside the configs and the journal (on the shared filesystem), not in a
process: attempt N+1 of a run requeued on another node reads attempts 1..N (rungs applied, the environment the next
attempt needs, verdicts). Each record names its run (`run`: `--run-id`, the scheduler's job id, or the supervisor's
start time and pid). Appends take `.oomfix/runs.lock` (flock: also across NFS clients, where O_APPEND alone is not
atomic); `run_lock` keeps two attempts of one run from ever overlapping. `oomfix runs` shows the ledger, grouped by
run. Unreadable lines (cut short by a kill, `Infinity`, not an object) are skipped, never a traceback.
"""
from __future__ import annotations

import fcntl
import json
import os
import re
import socket
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from oomfix.errors import InputError
from oomfix.journal import STATE_DIR

LEDGER = "runs.jsonl"
MAX_READ = 32 << 20  # bytes of the ledger read, from its end


@dataclass(frozen=True)
class Attempt:
    """One ended attempt of `oomfix run`: what ran, how it ended, the diagnosis, and the remedy applied after it."""

    attempt: int
    command: str  # as a shell would take it (shlex.join)
    started: str  # ISO 8601, UTC
    ended: str
    exit_code: int  # the job's exit status, shell convention: 128 + N when signal N killed it
    log: str
    cls: str | None  # the diagnosis of its log ("none" when it trained); null when it was not diagnosed
    rule: str | None = None  # the remedy applied after it, or null
    files: tuple[str, ...] = ()  # the files that remedy edited
    stopped_by: str | None = None  # the signal that stopped the supervisor during or after it
    run: str | None = None  # which `oomfix run` wrote it: two supervisors in one directory append to one ledger
    # newer fields (absent from older ledgers, which read as their defaults)
    verdict: str | None = None  # oomfix/verdicts.py: trained | fixed | outside | permanent | no-rung
    next_env: Mapping[str, str] = field(default_factory=dict)  # what the next attempt of the run must set
    host: str | None = None
    # canonical key -> [before, after] of the rule applied after it: the next attempt's log must not show "before"
    changed: Mapping[str, tuple[Any, Any]] = field(default_factory=dict)
    # the SHA-256 of the log `oomfix verdict --write` recorded: the same log written again is not a new attempt
    log_sha256: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The ledger line (and `oomfix runs --format json`): the newer fields only when they are set."""
        d = asdict(self)
        d["class"] = d.pop("cls")
        d["files"] = list(self.files)
        d["next_env"] = dict(self.next_env)
        d["changed"] = {k: list(v) for k, v in self.changed.items()}
        keys = ("attempt", "command", "started", "ended", "exit_code", "log", "class", "rule", "files", "stopped_by")
        extra = tuple(k for k in ("run", "verdict", "host", "log_sha256") if d[k] is not None)
        extra += tuple(k for k in ("next_env", "changed") if d[k])
        return {k: d[k] for k in keys + extra}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Attempt":
        """A ledger line read back; TypeError or KeyError when it is not a record."""
        env = d.get("next_env") or {}
        changed = d.get("changed") or {}
        if not isinstance(env, dict) or not isinstance(changed, dict):
            raise TypeError("next_env")
        return cls(_int(d["attempt"]), _str(d["command"]), _str(d["started"]), _str(d["ended"]),
                   _int(d["exit_code"]), _str(d["log"]), _opt(d.get("class")), _opt(d.get("rule")),
                   tuple(_str(f) for f in _list(d.get("files"))), _opt(d.get("stopped_by")), _opt(d.get("run")),
                   _opt(d.get("verdict")), {_str(k): _str(v) for k, v in env.items()}, _opt(d.get("host")),
                   {_str(k): _pair(v) for k, v in changed.items()}, _opt(d.get("log_sha256")))


@dataclass(frozen=True)
class Started:
    """Written before an attempt is launched; an attempt with no `Attempt` record after it was killed with its
    supervisor (or is still running)."""

    attempt: int
    command: str
    started: str
    log: str
    run: str | None = None
    host: str | None = None
    pid: int | None = None

    def to_json(self) -> dict[str, Any]:
        """The ledger line: `"event": "started"` tells it from an ended attempt."""
        return {"event": "started", **asdict(self)}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Started":
        """A `started` ledger line read back; TypeError or KeyError when it is not a record."""
        pid = d.get("pid")
        return cls(_int(d["attempt"]), _str(d["command"]), _str(d["started"]), _str(d["log"]), _opt(d.get("run")),
                   _opt(d.get("host")), None if pid is None else _int(pid))


def _int(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError("not an integer")
    return v


def _str(v: Any) -> str:
    if not isinstance(v, str):
        raise TypeError("not a string")
    return v


def _opt(v: Any) -> str | None:
    return None if v is None else _str(v)


def _list(v: Any) -> list[Any]:
    if v is None:
        return []
    if not isinstance(v, list):
        raise TypeError("not a list")
    return v


def _pair(v: Any) -> tuple[Any, Any]:
    if not isinstance(v, list) or len(v) != 2:
        raise TypeError("not a pair")
    return v[0], v[1]


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # json.loads would otherwise accept Infinity / NaN


def ledger_path(root: str | os.PathLike[str] = ".") -> Path:
    """`.oomfix/runs.jsonl` of the project at `root`."""
    return Path(root) / STATE_DIR / LEDGER


def hostname() -> str:
    """This machine's name, recorded with each attempt (the attempts of one run may run on several nodes)."""
    return socket.gethostname()


def _state_dir(path: Path) -> None:
    """The directory of the ledger and its locks: created when missing; a symlink or a file there is refused (a
    cloned repository's `.oomfix` must not send the ledger's writes somewhere else)."""
    d = path.parent
    if d.is_symlink():
        raise InputError(f"{d}: is a symlink; not writing the ledger through it")
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"{d}: cannot create it: {e.strerror or e}") from None
    if not d.is_dir():
        raise InputError(f"{d}: not a directory; cannot keep the ledger there")


@contextmanager
def _flock(path: Path, blocking: bool = True) -> Iterator[bool]:
    _state_dir(path)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
    except OSError as e:
        raise InputError(f"{path}: cannot open the lock: {e.strerror}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        except OSError:
            pass  # a filesystem without locks (some FUSE bucket mounts): one writer at a time is then up to the user
        yield True
    finally:
        os.close(fd)  # closing the descriptor releases the lock, also when the process is killed


def append(rec: Attempt | Started, root: str | os.PathLike[str] = ".") -> None:
    """One record, one line, under the ledger's lock, fsynced."""
    path = ledger_path(root)
    line = (json.dumps(rec.to_json()) + "\n").encode()
    with _flock(path.with_name("runs.lock")):
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            # a line cut short by an earlier kill must not swallow this record
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                line = b"\n" + line
            os.write(fd, line)  # one write per record, under the lock: records never interleave
            os.fsync(fd)
        finally:
            os.close(fd)


_RUN_NAME = re.compile(r"[^A-Za-z0-9._-]")


@contextmanager
def run_lock(run: str, root: str | os.PathLike[str] = ".", on_wait: Callable[[], None] | None = None
             ) -> Iterator[None]:
    """Held for one attempt of a run (`oomfix run --once`): a second scheduler's attempt of the same run waits
    until this one has ended and been recorded, so attempts never interleave. The lock is released when the
    process dies, however it dies."""
    path = ledger_path(root).with_name(f"run-{_RUN_NAME.sub('_', run)[:100]}.lock")
    with _flock(path, blocking=False) as got:
        if got:
            yield
            return
    if on_wait is not None:
        on_wait()
    with _flock(path):
        yield


def read_events(root: str | os.PathLike[str] = ".") -> list[Attempt | Started]:
    """Every readable record, in ledger order: `started` records and ended attempts."""
    path = ledger_path(root)
    try:
        if path.is_dir():
            raise InputError(f"{path}: is a directory, not the ledger")
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > MAX_READ:  # a runaway or hostile ledger: its newest records are the ones that matter
                f.seek(size - MAX_READ)
            data = f.read(MAX_READ)
        lines = data.decode("utf-8", errors="replace").splitlines()
        if size > MAX_READ and lines:
            lines = lines[1:]  # the first line starts mid-record
    except FileNotFoundError:
        return []
    except OSError as e:
        raise InputError(f"{path}: cannot read: {e.strerror}") from None
    out: list[Attempt | Started] = []
    for line in lines:
        if not line.strip():
            continue
        try:
            d = json.loads(line, parse_constant=_no_constant)
            if not isinstance(d, dict):
                continue
            out.append(Started.from_json(d) if d.get("event") == "started" else Attempt.from_json(d))
        except (ValueError, KeyError, TypeError, AttributeError, OverflowError, RecursionError):
            # a line cut short by a kill mid-append, or not a record: skip it rather than lose the rest
            continue
    return out


def read(root: str | os.PathLike[str] = ".") -> list[Attempt]:
    """The ended attempts, in ledger order."""
    return [a for a in read_events(root) if isinstance(a, Attempt)]


def of_run(events: Sequence[Attempt | Started], run: str) -> list[Attempt | Started]:
    """The records of one run, in ledger order."""
    return [e for e in events if e.run == run]


def unfinished(events: Sequence[Attempt | Started]) -> list[Started]:
    """`started` records with no ended attempt of the same run and number after them."""
    ended = {(e.run, e.attempt) for e in events if isinstance(e, Attempt)}
    return [e for e in events if isinstance(e, Started) and (e.run, e.attempt) not in ended]


def runs(attempts: Sequence[Attempt]) -> list[list[Attempt]]:
    """The attempts grouped by run, in the order runs started: by run id (two supervisors in one directory
    interleave their records); a record without one (an older ledger) starts a run at attempt 1."""
    out: list[list[Attempt]] = []
    by_id: dict[str, list[Attempt]] = {}
    last: list[Attempt] | None = None  # the run of the last record without an id
    for a in attempts:
        if a.run is not None:
            ended = by_id.get(a.run)
            if ended is None or (ended[-1].verdict == "trained"):
                # a run that trained is over: a later attempt under its id (the same command again, outside a
                # scheduler) starts a new one
                by_id[a.run] = []
                out.append(by_id[a.run])
            by_id[a.run].append(a)
            continue
        if a.attempt == 1 or last is None:
            last = []
            out.append(last)
        last.append(a)
    return out


def runs_json(attempts: Sequence[Attempt], open_attempts: Sequence[Started] = ()) -> dict[str, Any]:
    """`oomfix runs --format json`: the ended attempts, and the ones without an end record."""
    return {"attempts": [a.to_json() for a in attempts], "unfinished": [s.to_json() for s in open_attempts]}


def render_text(attempts: Sequence[Attempt], open_attempts: Sequence[Started] = ()) -> str:
    """`oomfix runs`: the attempts without an end record first, then each run with its attempts."""
    if not attempts and not open_attempts:
        return f"no runs recorded ({os.path.join(STATE_DIR, LEDGER)} is empty or absent)\n"
    lines = []
    for s in open_attempts:
        lines.append(f"started, no end recorded: run {s.run} attempt {s.attempt} on {s.host or '?'} (pid {s.pid}), "
                     f"{s.started}: still running, or its supervisor was killed")
        lines.append(f"      {s.command}")
        lines.append(f"      log: {s.log}")
        lines.append("")
    for i, run in enumerate(runs(attempts), 1):
        last = run[-1]
        outcome = ("trained" if last.exit_code == 0 else
                   f"stopped by {last.stopped_by}" if last.stopped_by else f"failed ({last.cls or 'unknown'})")
        lines.append(f"run {i}: {len(run)} attempt{'s' if len(run) != 1 else ''}, {outcome}, started {run[0].started}")
        for a in run:
            what = a.cls or "-"
            after = f" -> {a.rule}" + (f" ({', '.join(a.files)})" if a.files else "") if a.rule else ""
            stop = f", stopped by {a.stopped_by}" if a.stopped_by else ""
            verdict = f"  [{a.verdict}]" if a.verdict else ""
            lines.append(f"  #{a.attempt} exit {a.exit_code:<3} {what}{after}{stop}{verdict}")
            lines.append(f"      {a.command}")
            lines.append(f"      log: {a.log}   {a.started} .. {a.ended}")
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"
