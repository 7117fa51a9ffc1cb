"""The run ledger, `.oomfix/runs.jsonl`: one JSON object per attempt of `oomfix run`, appended when it ends.

Each record names its run (`run`: the supervisor's start time and pid); `oomfix runs` shows the ledger, grouped by
run.
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from oomfix.errors import InputError
from oomfix.journal import STATE_DIR

LEDGER = "runs.jsonl"


@dataclass(frozen=True)
class Attempt:
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

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["class"] = d.pop("cls")
        d["files"] = list(self.files)
        keys = ("attempt", "command", "started", "ended", "exit_code", "log", "class", "rule", "files", "stopped_by")
        return {k: d[k] for k in keys + (("run",) if self.run is not None else ())}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Attempt":
        return cls(int(d["attempt"]), str(d["command"]), str(d["started"]), str(d["ended"]), int(d["exit_code"]),
                   str(d["log"]), d.get("class"), d.get("rule"), tuple(d.get("files") or ()), d.get("stopped_by"),
                   None if d.get("run") is None else str(d["run"]))


def ledger_path(root: str | os.PathLike[str] = ".") -> Path:
    return Path(root) / STATE_DIR / LEDGER


def append(rec: Attempt, root: str | os.PathLike[str] = ".") -> None:
    path = ledger_path(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(rec.to_json()) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)  # one O_APPEND write per record: two supervisors in one directory never interleave
        os.fsync(fd)
    finally:
        os.close(fd)


def read(root: str | os.PathLike[str] = ".") -> list[Attempt]:
    path = ledger_path(root)
    try:
        lines = path.read_bytes().decode("utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        return []
    except OSError as e:
        raise InputError(f"{path}: cannot read: {e.strerror}") from None
    out = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            out.append(Attempt.from_json(json.loads(line)))
        except (ValueError, KeyError, TypeError):
            # a line cut short by a kill mid-append: skip it rather than lose the rest of the ledger
            continue
    return out


def runs(attempts: Sequence[Attempt]) -> list[list[Attempt]]:
    """The attempts grouped by run, in the order runs started: by run id (two supervisors in one directory
    interleave their records); a record without one (an older ledger) starts a run at attempt 1."""
    out: list[list[Attempt]] = []
    by_id: dict[str, list[Attempt]] = {}
    last: list[Attempt] | None = None  # the run of the last record without an id
    for a in attempts:
        if a.run is not None:
            if a.run not in by_id:
                by_id[a.run] = []
                out.append(by_id[a.run])
            by_id[a.run].append(a)
            continue
        if a.attempt == 1 or last is None:
            last = []
            out.append(last)
        last.append(a)
    return out


def render_text(attempts: Sequence[Attempt]) -> str:
    if not attempts:
        return f"no runs recorded ({os.path.join(STATE_DIR, LEDGER)} is empty or absent)\n"
    lines = []
    for i, run in enumerate(runs(attempts), 1):
        last = run[-1]
        outcome = ("trained" if last.exit_code == 0 else
                   f"stopped by {last.stopped_by}" if last.stopped_by else f"failed ({last.cls or 'unknown'})")
        lines.append(f"run {i}: {len(run)} attempt{'s' if len(run) != 1 else ''}, {outcome}, started {run[0].started}")
        for a in run:
            what = a.cls or "-"
            after = f" -> {a.rule}" + (f" ({', '.join(a.files)})" if a.files else "") if a.rule else ""
            stop = f", stopped by {a.stopped_by}" if a.stopped_by else ""
            lines.append(f"  #{a.attempt} exit {a.exit_code:<3} {what}{after}{stop}")
            lines.append(f"      {a.command}")
            lines.append(f"      log: {a.log}   {a.started} .. {a.ended}")
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"
