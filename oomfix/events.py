"""Turn candidate lines into events: what a line says, who said it (rank, host) and when."""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from oomfix import patterns as P
from oomfix.reader import Candidate

SIGNALS = {1: "SIGHUP", 2: "SIGINT", 3: "SIGQUIT", 6: "SIGABRT", 7: "SIGBUS", 9: "SIGKILL", 11: "SIGSEGV",
           15: "SIGTERM"}


@dataclass(frozen=True)
class Event:
    pattern: str
    role: str
    cls: str | None
    confidence: str
    file: str
    line: int
    text: str  # the cleaned line
    rank: int | None = None
    host: str | None = None
    time: str | None = None  # "MMDD HH:MM:SS.ffffff", comparable across logs of one job
    data: dict[str, Any] = field(default_factory=dict)
    progress: tuple[int, int] | None = None  # the last tqdm "n/m" before this line
    frame: str | None = None  # innermost traceback frame before this line: "path:line in func"


def clean(raw: bytes) -> str:
    text = raw.decode("utf-8", "replace")
    if "\x1b" in text:
        text = P.ANSI.sub("", text)
    if "]" in text and "/" in text:
        text = P.TQDM_PREFIX.sub("", text, count=1)
    return text.rstrip("\r\n")


def signal_name(value: str | int | None) -> str | None:
    if value is None:
        return None
    if isinstance(value, str) and value.startswith("SIG"):
        return value
    try:
        n = abs(int(value))
    except ValueError:
        return None
    return SIGNALS.get(n, f"signal {n}")


def _time_of(text: str) -> str | None:
    m = P.GLOG.match(text)
    if m:
        return f"{m['md']} {m['hms']}"
    m = P.DS_TIME.match(text)
    if m:
        return f"{m['m']}{m['d']} {m['hms']}.{(m['f'] or '0')}"
    return None


def _last_progress(before: bytes) -> tuple[int, int] | None:
    tail = before[-8192:]
    last = None
    for m in P.PROGRESS.finditer(tail):
        last = m
    if last is None:
        return None
    return int(last.group(1)), int(last.group(2))


def _last_frame(before: bytes) -> str | None:
    tail = before[-8192:]
    last = None
    for m in P.TRACEBACK_FRAME.finditer(tail):
        last = m
    if last is None:
        return None
    path, line, func = (g.decode("utf-8", "replace") for g in last.groups())
    return f"{path}:{line} in {func.strip()}"


# roles for which look-back context is worth its cost
_NEEDS_CONTEXT = {P.CAUSE, P.WEAK, P.EXCEPTION, P.DEATH, P.AGENT_SIGNAL}


def parse_line(cand: Candidate, file: str, patterns: tuple[P.Pattern, ...] = P.PATTERNS) -> Event | None:
    text = clean(cand.raw)
    body = text
    rank = host = None
    time = _time_of(body)
    g = P.GLOG.match(body)
    if g:
        body = body[g.end():]
    m = P.PREFIX.match(body)
    if m and m.end() > 0:
        if m["rank"] is not None:
            rank = int(m["rank"])
        elif m["mpirank"] is not None:
            rank = int(m["mpirank"])
        elif m["srun"] is not None:
            rank = int(m["srun"])
        elif m["hrank"] is not None:
            rank, host = int(m["hrank"]), m["h1"]
        elif m["host"] is not None and m["host"] not in ("stderr", "stdout"):
            host = m["host"]
        body = body[m.end():]
        # "[rank1]:[E ProcessGroupNCCL.cpp:1414] ..." or "0: E0909 14:03:50 ..." carry a second prefix
        g = P.GLOG.match(body)
        if g:
            time = time or f"{g['md']} {g['hms']}"
            body = body[g.end():]
    n = P.NCCL_PREFIX.match(body)
    if n:
        host = host or n["host"]
        if rank is None:
            rank = int(n["dev"])
    lead = body.lstrip()
    for pat in patterns:
        if not any(mk.decode() in body for mk in pat.markers):
            continue
        target = lead if pat.role in (P.EXCEPTION, P.TABLE, P.OOM_DETAIL) else body
        mm = pat.regex.search(target)
        if not mm:
            continue
        data = {k: v for k, v in mm.groupdict().items() if v is not None}
        if rank is None and pat.role in (P.CAUSE, P.WEAK, P.EXCEPTION):
            r = P.RANK_IN_TEXT.search(body)
            if r:
                rank = int(r["rank"])
        progress = frame = None
        if pat.role in _NEEDS_CONTEXT:
            progress = _last_progress(cand.before + cand.raw)
            if pat.role in (P.EXCEPTION, P.CAUSE):
                frame = _last_frame(cand.before)
        return Event(pat.name, pat.role, pat.cls, pat.confidence, file, cand.line_no, text.strip()[:2000],
                     rank, host, time, data, progress, frame)
    return None


def events(cands: Iterator[Candidate], file: str, extra: tuple[P.Pattern, ...] = (),
           warnings: list[str] | None = None) -> Iterator[Event]:
    """Events of a log. `extra` (user patterns) are tried first; one that times out is reported and dropped."""
    patterns = tuple(extra) + P.PATTERNS
    for c in cands:
        while True:
            try:
                ev = parse_line(c, file, patterns)
                break
            except P.PatternTimeout as t:
                patterns = tuple(p for p in patterns if p is not t.pattern)
                if warnings is not None:
                    warnings.append(f"rule pattern '{t.pattern.name}' ({getattr(t.pattern, 'source', '')}) took more "
                                    f"than {P.USER_REGEX_TIMEOUT}s on {file}:{c.line_no} (catastrophic backtracking?); "
                                    f"it was skipped for the rest of the run")
        if ev is not None:
            yield ev
