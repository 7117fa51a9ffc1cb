"""Turn candidate lines into events: what a line says, who said it (rank, host) and when."""
from __future__ import annotations

import functools
import re
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from oomfix import patterns as P
from oomfix.reader import STATE_KEEP, Candidate

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


@dataclass(frozen=True)
class Prefixes:
    """What the wrappers in front of a line said: stripped from the text, kept as facts."""

    body: str
    rank: int | None = None
    host: str | None = None
    time: str | None = None
    level: str | None = None  # glog severity letter: I, W, E, F
    src: str | None = None  # glog source file: "ProcessGroupNCCL.cpp"


def _stamp(month: str, day: str, hms: str, frac: str | None) -> str:
    """A time as events compare them across the logs of one job: "MMDD HH:MM:SS.f"."""
    return f"{month}{day} {hms}.{frac or '0'}"



def _rich_trail(body: str) -> str:
    """`body` without a rich box's right edge (`   ───╯`, `  │`): trailing blanks, the edge, the rule characters and
    blanks before it. Unchanged when it does not end in an edge."""
    t = body.rstrip()
    if t and t[-1] in P.RICH_RIGHT_EDGE:
        return t[:-1].rstrip(P.RICH_RULE).rstrip()
    return body

def strip_prefixes(text: str) -> Prefixes:
    """Strip, in any order and any number, what loggers, launchers and pasting put before a record: markdown quotes,
    wall-clock stamps, Ray actor tags, mpirun/accelerate tags, rank and host prefixes, glog headers, NCCL's
    host:pid:tid. One place for all of them, so that no pattern has to know about any."""
    body = text
    rank = host = time = level = src = None
    if "repeated" in body:
        body = P.RAY_REPEATED.sub("", body)
    first = body.lstrip()[:1]
    if first and first in P.RICH_BOX_CHARS:
        body = _rich_trail(P.RICH_LEAD.sub("", body, count=1))
    for _ in range(8):
        before = body
        m = P.MARKDOWN_PREFIX.match(body)
        if m and m.end():
            body = body[m.end():].lstrip()
        m = P.CLOCK_PREFIX.match(body)
        if m:
            if time is None and m["y"]:
                time = _stamp(m["mo"], m["d"], m["hms"], m["f"])
            body = body[m.end():]
        m = P.RAY_PREFIX.match(body)
        if m:
            body = body[m.end():]
        g = P.GLOG_ANY.match(body)
        if g:
            level = level or g["lvl"]
            src = src or g["src"].rsplit("/", 1)[-1]
            if time is None and g["md"]:
                time = f"{g['md'].zfill(4)} {g['hms']}"  # c10 prints the month unpadded ("E429" = April 29)
            body = body[g.end():]
        m = P.DS_TIME.match(body)
        if m and time is None:
            time = _stamp(m["m"], m["d"], m["hms"], m["f"])
        m = P.PREFIX.match(body)
        if m and m.end() > 0:
            if m["rank"] is not None:
                rank = rank if rank is not None else int(m["rank"])
            elif m["mpirank"] is not None:
                rank = rank if rank is not None else int(m["mpirank"])
            elif m["srun"] is not None:
                rank = rank if rank is not None else int(m["srun"])
            elif m["hrank"] is not None:
                rank, host = (rank if rank is not None else int(m["hrank"])), host or m["h1"]
            elif m["host"] is not None and m["host"] not in ("stderr", "stdout"):
                host = host or m["host"]
            body = body[m.end():]
        if body == before:
            break
    n = P.NCCL_PREFIX.match(body)
    if n:
        host = host or n["host"]
        if rank is None:
            rank = int(n["dev"])
    return Prefixes(body, rank, host, time, level, src)


# a progress bar redrawn into the middle of a message pads it: "Unexpected segment          ation fault"
_PADDING = re.compile(r"(?<=\w) {6,}(?=\w)")


_STR_MARKERS: dict[int, tuple[tuple[bytes, ...], tuple[str, ...]]] = {}


def _str_markers(pat: P.Pattern) -> tuple[str, ...]:
    """A pattern's markers as text, decoded once (not once per pattern per line)."""
    got = _STR_MARKERS.get(id(pat))
    if got is None or got[0] is not pat.markers:
        got = _STR_MARKERS[id(pat)] = (pat.markers, tuple(m.decode() for m in pat.markers))
    return got[1]


def _matches(patterns: tuple[P.Pattern, ...], text: str, body: str, lead: str,
             level: str | None) -> Iterator[tuple[P.Pattern, Any]]:
    """The first pattern that matches the line (at most one), tried on the squeezed text if the plain one fails."""
    fallback = None
    for attempt in (0, 1):
        if attempt:
            if "      " not in body:
                break
            body = _PADDING.sub("", body)
            lead = body.lstrip()
        for pat in patterns:
            if pat.levels:
                if not level or level not in pat.levels:
                    continue
                target = text
            else:
                target = lead if pat.role in (P.EXCEPTION, P.TABLE, P.OOM_DETAIL) else body
            if not any(mk in target for mk in _str_markers(pat)):
                continue
            mm = pat.regex.search(target)
            if mm:
                if pat.role == P.ERROR_LEVEL:
                    fallback = fallback or (pat, mm)  # a specific wording may show once the padding is gone
                    break
                yield pat, mm
                return
    if fallback:
        yield fallback


WRAP_MIN = 80  # a terminal narrower than this is not worth guessing about
WRAP_SPAN = 40  # physical lines of one wrapped record, at most, each way


def _phys_lines(data: bytes, n: int, before: bool) -> list[str]:
    """What each of the n whole physical lines nearest the candidate shows once a progress bar's "\r" redraws are done
    and a bar glued before it is gone: the last n of `data` (the bytes before the candidate, without the candidate's
    own line start), or the first n after the candidate's line (`data` starts with the rest of that line)."""
    parts = data.split(b"\n", n + 1) if not before else data.rsplit(b"\n", n + 1)
    parts = parts[:-1][-n:] if before else parts[1:n + 1]
    return [clean(x.rstrip(b"\r").rsplit(b"\r", 1)[-1]) for x in parts]


def unwrap(cand: Candidate, text: str) -> str:
    """The logical line a terminal hard-wrapped at a fixed width: physical lines of exactly the width W, joined with
    the shorter line that ends the record. W is a width that recurs in the neighbourhood (one long line is just a long
    line). Joins are plain concatenation: a terminal cuts mid-word, wherever column W falls."""
    n = len(text)
    # split first, clean only the WRAP_SPAN lines kept (a window of short lines holds hundreds)
    before = _phys_lines(cand.tail(WRAP_MIN * WRAP_SPAN * 4), WRAP_SPAN, True)
    prev = before[-1] if before else ""
    width = 0
    if len(prev) >= WRAP_MIN and len(prev) >= n:
        width = len(prev)
    elif n >= WRAP_MIN:
        width = n
    if not width:
        return text
    after: list[str] = []
    if n == width:
        after = _phys_lines(cand.after(width * WRAP_SPAN * 4 + 2), WRAP_SPAN, False)
    seq = before + [text] + after
    pairs = [(a, b) for a, b in zip(seq, seq[1:]) if len(a) == width and _continues(a, b)]
    if len(pairs) < 2 or not any(a[-1:].isalnum() and b[:1].isalnum() for a, b in pairs):
        # one long line, or lines that happen to be as long: a terminal's cuts recur, and some fall mid-word
        return text
    head: list[str] = []
    cur = text
    for x in reversed(before):
        if len(x) != width or not _continues(x, cur):
            break
        head.append(x)
        cur = x
    tail: list[str] = []
    cur = text
    if n == width:
        for x in after:
            if not _continues(cur, x):
                break
            tail.append(x)
            if len(x) != width:
                break
            cur = x
    if not head and not tail:
        return text
    return "".join(reversed(head)) + text + "".join(tail)


# the start of an exception line and of a glog header, wherever a record can begin
_EXC_NAME = r"(?:[A-Za-z_]\w*\.)*[A-Z]\w*(?:Error|Exception): "
_GLOG_HEAD = r"\[?[IWEF]\d{3,4} \d\d:"
# lines that start a record of their own: never the continuation of a wrapped one
_RECORD_START = re.compile(rf"^\s*(?:Traceback \(|File \"|\[?rank\d+\]|{_GLOG_HEAD}|\[?\d{{4}}-\d\d-\d\d[ T_]|"
                           rf"(?:WARNING|INFO|ERROR|DEBUG)[:\s]|frame #\d|{_EXC_NAME})")


_DIGITS = re.compile(r"\d")


def _continues(first: str, second: str) -> bool:
    """Can `second` be the rest of `first`, cut by a terminal? Not when it starts a record of its own, or starts the
    way `first` does (two lines of one template, such as every rank's "Sending process N closing signal", often have
    the same length)."""
    if not second or _RECORD_START.match(second) or first.endswith("  "):
        return False  # a line padded with spaces to the width ended there
    k = min(16, len(first), len(second))
    return _DIGITS.sub("0", first[:k]) != _DIGITS.sub("0", second[:k])


# Where one physical line holds several records: two ranks' output interleaved ("...[rank1]: x[rank0]: y"), or a
# whole log flattened onto one line by a paste. A record starts at a rank prefix, a traceback header, a glog header
# or (in a long line) an exception name.
_RECORD_SPLIT = re.compile(r"(?<=\S)(?=\[(?:rank|default)\d+\]:)|(?<=.)(?=Traceback \(most recent call last\))")
_LONG_RECORD_SPLIT = re.compile(rf"(?<=\s)(?={_EXC_NAME}|{_GLOG_HEAD}\d\d:\d\d)")
LONG_LINE = 400


def records(text: str) -> list[str]:
    parts = _RECORD_SPLIT.split(text) if ("[rank" in text or "[default" in text or "Traceback" in text) else [text]
    if len(text) > LONG_LINE:
        parts = [q for part in parts for q in _LONG_RECORD_SPLIT.split(part)]
    if len(parts) == 1:
        return parts
    out: list[str] = []
    carry = ""
    for q in parts:
        if not strip_prefixes(q).body.strip():
            carry += q  # only prefixes ("[rank2]: "): they belong to the record that follows
            continue
        out.append(carry + q)
        carry = ""
    if carry and out:
        out[-1] += carry
    return out or [text]


def parse_records(cand: Candidate, file: str, patterns: tuple[P.Pattern, ...] = P.PATTERNS) -> list[Event]:
    """The events of one candidate line: one per record it holds that a pattern claims."""
    text = alone = clean(cand.raw)
    if (len(text) >= WRAP_MIN or _few_breaks(cand.tail(WRAP_MIN + 2))) and \
            not (cand._buf and _amid_repeats(cand)) and _may_unwrap(cand, text):
        text = unwrap(cand, text)
    if cand.pats is not None and text == alone:
        # the line is read alone: only the patterns the prefilter found possible for it can match (in their order)
        # (cand.pats is in the prefilter's pattern order, which is this one's: only those still in use are kept)
        live = _ids(patterns)
        patterns = tuple(p for p in cand.pats if id(p) in live)
    out = []
    for rec in records(text):
        ev = _parse_text(cand, file, patterns, rec)
        if ev is not None:
            out.append(ev)
    return out


_IDS: dict[int, tuple[tuple, frozenset[int]]] = {}


def _ids(patterns: tuple[P.Pattern, ...]) -> frozenset[int]:
    """The ids of a pattern tuple's members, computed once per tuple (not once per candidate line)."""
    got = _IDS.get(id(patterns))
    if got is None or got[0] is not patterns:
        if len(_IDS) > 64:
            _IDS.clear()
        got = _IDS[id(patterns)] = (patterns, frozenset(map(id, patterns)))
    return got[1]


def _few_breaks(tail: bytes) -> bool:
    """Is the line after these bytes maybe the rest of a line a terminal wrapped (one line break in them at most)?"""
    return bool(tail) and tail.count(b"\n") <= 1


def _phys(seg: bytes) -> str:
    return clean(seg.rstrip(b"\r").rsplit(b"\r", 1)[-1])


def _may_unwrap(cand: Candidate, text: str) -> bool:
    """Could `unwrap` change this line? Only when it continues the physical line before it or is continued by the one
    after it (its head or tail would be empty otherwise): decided on those two lines, not the eighty it reads."""
    n = len(text)
    b = cand.tail(WRAP_MIN * WRAP_SPAN * 4)
    i = b.rfind(b"\n")
    prev = _phys(b[b.rfind(b"\n", 0, i) + 1:i]) if i != -1 else ""
    if len(prev) >= WRAP_MIN and len(prev) >= n:
        width = len(prev)
    elif n >= WRAP_MIN:
        width = n
    else:
        return False
    joins = i != -1 and len(prev) == width and _continues(prev, text)
    a = b""
    if n == width:
        a = cand.after(width * WRAP_SPAN * 4 + 2)
        j = a.find(b"\n")
        if not joins and j != -1:
            k = a.find(b"\n", j + 1)
            joins = _continues(text, _phys(a[j + 1:k if k != -1 else len(a)]))
    if not joins:
        return False
    # a wrap recurs: unwrap needs a second line of the width around (its lines are at most as long in characters as
    # their last "\r" segment is in bytes, which are at most as long as the line); split only as far as it looks
    around = b.rsplit(b"\n", WRAP_SPAN + 1)[:-1][-WRAP_SPAN:] + a.split(b"\n", WRAP_SPAN + 1)[1:WRAP_SPAN + 1]
    return any(len(x) >= width and len(x.rstrip(b"\r").rsplit(b"\r", 1)[-1]) >= width for x in around)


# (WEAK patterns may match code on purpose: `self._store = TCPStore(` is where a busy port surfaces)
_CODE_ROLES = frozenset({P.CAUSE, P.EXCEPTION, P.ERROR_LEVEL})
_FRAME_LINE = re.compile(r'^\s*File "[^"]+", line \d+, in ')


def _indent(text: str, lead: str) -> int:
    """Spaces just before the line's body (after any prefix): CPython indents a frame's source line by 4."""
    i = text.find(lead[:40]) if lead else -1
    j = i
    while j > 0 and text[j - 1] == " ":
        j -= 1
    return i - j


def _frame_source(cand: Candidate) -> bool:
    """Is this indented line the source line CPython prints under a traceback frame (`File "x.py", line 3, in f`)?"""
    b = cand.before[-4096:] if cand.before else b""
    i = b.rfind(b"\n")
    if i == -1:
        return False
    prev = _phys(b[b.rfind(b"\n", 0, i) + 1:i])
    return bool(_FRAME_LINE.match(strip_prefixes(prev).body))


def parse_line(cand: Candidate, file: str, patterns: tuple[P.Pattern, ...] = P.PATTERNS) -> Event | None:
    evs = parse_records(cand, file, patterns)
    return evs[0] if evs else None


def _parse_text(cand: Candidate, file: str, patterns: tuple[P.Pattern, ...], text: str) -> Event | None:
    pre = strip_prefixes(text)
    body, rank, host, time = pre.body, pre.rank, pre.host, pre.time
    lead = body.lstrip()
    for pat, mm in _matches(patterns, text, body, lead, pre.level):
        if pat.role in _CODE_ROLES and _indent(text, lead) >= 4 and _frame_source(cand):
            return None  # a traceback frame's source line ("    raise torch.OutOfMemoryError(msg)") is code, not an event
        data = {k: v for k, v in mm.groupdict().items() if v is not None}
        if rank is None and pat.role in (P.CAUSE, P.WEAK, P.EXCEPTION):
            r = P.RANK_IN_TEXT.search(body)
            if r:
                rank = int(r["rank"])
        progress = frame = None
        if pat.role in _NEEDS_CONTEXT:
            progress = _last_progress(cand.tail(8192) + cand.raw)
            if pat.role in (P.EXCEPTION, P.CAUSE):
                frame = _last_frame(cand.tail(8192))
        return Event(pat.name, pat.role, pat.cls, pat.confidence, file, cand.line_no, text.strip()[:2000],
                     rank, host, time, data, progress, frame)
    return None


def events(cands: Iterator[Candidate], file: str, extra: tuple[P.Pattern, ...] = (),
           warnings: list[str] | None = None, before_refill: list | None = None) -> Iterator[Event]:
    """Events of a log. `extra` (user patterns) are tried first; one that times out is reported and dropped.
    `before_refill`: the reader's hooks (reader.scan), so that held lines are copied only when their buffer goes."""
    patterns = tuple(extra) + P.PATTERNS
    # State lines (checkpoint saves, evaluation markers) only matter as the last state before a failure, and as the
    # first one after it (its time). The reader hands on only those around each candidate (reader.scan); here they
    # are kept unparsed, the last few, and parsed when a failure shows up; everything else is parsed as it comes.
    pending: deque[Candidate] = deque(maxlen=STATE_KEEP)
    want_next = False
    live: set[int] = set()  # pending lines that still point into the reader's buffer

    def detach_live() -> None:
        for i, pc in enumerate(pending):
            if id(pc) in live:
                pending[i] = _detach(pc)
        live.clear()

    if before_refill is not None:
        before_refill.append(detach_live)

    def parse(c: Candidate) -> list[Event]:
        nonlocal patterns
        while True:
            try:
                return parse_records(c, file, patterns)
            except P.PatternTimeout as t:
                patterns = tuple(p for p in patterns if p is not t.pattern)
                if warnings is not None:
                    warnings.append(f"rule pattern '{t.pattern.name}' ({getattr(t.pattern, 'source', '')}) took more "
                                    f"than {P.USER_REGEX_TIMEOUT}s on {file}:{c.line_no} (catastrophic backtracking?); "
                                    f"it was skipped for the rest of the run")

    # Repeats: lines of one template (as the first one parsed, but for numbers) printed again and again (a device
    # assert from every CUDA thread, a per-step warning) are parsed once, and then again every REPEAT_GAP lines, so
    # that the state still sees the start of every run and points close enough to close its clusters; the lines in
    # between are counted, not parsed.
    runs: dict[tuple[tuple[int, ...], bytes], list[int]] = {}  # key -> [line last parsed, usable?]

    for c in cands:
        if not want_next and _deferrable(c):
            if before_refill is None:
                pending.append(_detach(c))
            else:
                pending.append(c)
                live.add(id(c))
            continue
        key = _template(c)
        run = runs.get(key) if key is not None else None
        if run is not None and run[1] and c.line_no - run[0] <= REPEAT_GAP and _amid_repeats(c):
            continue
        evs = parse(c)
        if key is not None:
            if len(runs) >= 4096:
                runs.clear()
            runs[key] = [c.line_no, all(e.role in REPEATABLE for e in evs)]
        if not evs:
            continue
        failure = any(e.role != P.PHASE for e in evs)
        if failure and pending:
            for pc in reversed(pending):
                pev = parse(pc)
                if pev:
                    yield from pev
                    break
            pending.clear()
            live.clear()
        want_next = failure
        yield from evs


_SPLITS = (b"[rank", b"[default", b"Traceback")
_SPLITS_RX = re.compile(b"|".join(re.escape(x) for x in _SPLITS))
REPEATABLE = frozenset({P.CAUSE, P.WEAK, P.EXCEPTION, P.ERROR_LEVEL, P.TRACEBACK})
REPEAT_GAP = 100  # lines; well under classify.CLUSTER_GAP, so that the clusters it reads close as they did
_TPL_HEAD = 24  # the prefixes (rank, host) at the start of a line are part of its template, digits and all
_TPL_DIGIT = re.compile(rb"(?<![Rr]ank)(?<![Rr]ank )(?<![Rr]ank=)\d")  # a rank named in the text is too


@functools.lru_cache(maxsize=None)
def _digit_sensitive(p: P.Pattern) -> bool:
    from oomfix.prefilter import _digit_sensitive as sensitive, _source

    src = _source(p)[0]
    return not src or sensitive(src)


def _template(c: Candidate) -> tuple[tuple[int, ...], bytes] | None:
    """What a line has in common with its repeats; None when numbers can change what it says (a pattern that names a
    digit, or no prefilter verdict)."""
    pats = c.pats
    if not pats or any(_digit_sensitive(p) for p in pats):
        return None
    raw = c.raw
    return tuple(id(p) for p in pats), raw[:_TPL_HEAD] + _TPL_DIGIT.sub(b"0", raw[_TPL_HEAD:])


_ZERO = bytes.maketrans(b"123456789", b"000000000")
_NOT_REPEAT_RX = re.compile(rb"\x1b|it/s|s/it")  # a line _amid_repeats never counts as a repeat


def _amid_repeats(c: Candidate) -> bool:
    """Are the physical lines before and after this one of its template at their start? Then `unwrap` cannot join
    it with them (events._continues), and parsing it alone gives what the first of the run gave."""
    buf, start = c._buf, c._start
    stop = start + len(c.raw)
    ln = buf.rfind(b"\n", 0, start)
    if ln <= 0 or buf.rfind(b"\r", ln, start) != -1:
        return False
    nl = buf.find(b"\n", stop, c._valid)
    if nl == -1:
        return False
    nxt = buf.find(b"\n", nl + 1, c._valid)
    if nxt == -1:
        return False
    prev = bytes(buf[buf.rfind(b"\n", 0, ln) + 1:ln])
    after = bytes(buf[nl + 1:nxt])
    me = c.raw[:16]
    if len(me) < 16 or not me.isascii():
        return False
    key = me.translate(_ZERO)
    for other in (prev, after):
        if other[:16].translate(_ZERO) != key or b"\x1b" in other or b"\r" in other or b"it/s" in other or \
                b"s/it" in other:
            return False
    return b"\x1b" not in c.raw and b"it/s" not in c.raw and b"s/it" not in c.raw


def _deferrable(c: Candidate) -> bool:
    """A line only state patterns can match, short enough that what parsing reads around it is a small copy."""
    pats = c.pats
    return bool(pats) and all(p.role == P.PHASE for p in pats) and len(c.raw) <= LONG_LINE and \
        not _SPLITS_RX.search(c.raw)


def _detach(c: Candidate) -> Candidate:
    """A copy of a candidate that holds what parsing it reads (the neighbours `unwrap` looks at), not the reader's
    buffer, which the next read overwrites: parsed later, it gives the same events."""
    buf, start = c._buf, c._start
    if start > WRAP_MIN + 2:
        short = bytes(buf[start - WRAP_MIN - 2:start])
        if len(c.raw) < WRAP_MIN and short.count(b"\n") > 1:
            # parse_records will not look for a wrap: the bytes it reads before the line are enough
            return Candidate(c.line_no, c.offset, c.raw, short + c.raw, len(short))
        if _amid_repeats(c):
            # its neighbours start as it does, so `unwrap` leaves it alone; they are all it compares it with
            ln = buf.rfind(b"\n", 0, start)
            lo = buf.rfind(b"\n", 0, ln) + 1
            nl = buf.find(b"\n", start + len(c.raw), c._valid)
            hi = buf.find(b"\n", nl + 1, c._valid) + 1
            return Candidate(c.line_no, c.offset, c.raw, bytes(buf[lo:hi]), start - lo)
    n = WRAP_MIN * WRAP_SPAN * 4
    before = c.tail(n)
    after = c.after(len(c.raw) * WRAP_SPAN * 4 + 2)
    return Candidate(c.line_no, c.offset, c.raw, before + c.raw + after, len(before))
