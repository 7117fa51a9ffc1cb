"""Read logs as streams of bytes and hand out only the lines that can matter.

A multi-GB log is mostly tqdm bars and loss dicts. The reader never decodes or splits those: a prefilter
finds, in large binary buffers, the lines that one of the patterns can match (oomfix.prefilter: a marker and the
pattern's loosened regex), and only those lines are cut out, decoded and cleaned, each with the patterns it can
match. Memory is bounded by the buffer size, whatever the log's size or line length.
"""
from __future__ import annotations

import functools
import gzip
import io
import os
import re
import stat
import sys
import zlib
from collections.abc import Callable, Generator, Iterator
from typing import TYPE_CHECKING, BinaryIO

from oomfix.errors import InputError
from oomfix import patterns as _P
from oomfix.patterns import ANCHORS, FOLLOW, HEAD_BYTES, PATTERNS, Pattern

if TYPE_CHECKING:
    from oomfix.prefilter import Plan

CHUNK = 8 << 20
# a "line" longer than this (a \r-less progress stream, a binary blob) is cut; markers are still found
MAX_CARRY = 1 << 20
CONTEXT = 64 << 10  # bytes kept before each candidate for look-back (tracebacks, progress bars)
MAX_LINE = 16 << 10  # a candidate line is cut to this many bytes around its marker
SNIFF = 64 << 10


class Candidate:
    """A line worth parsing. `before` (the bytes preceding it, for look-back) is cut only when asked for."""

    __slots__ = ("line_no", "offset", "raw", "_buf", "_start", "_prev", "_valid", "pats")

    def __init__(self, line_no: int, offset: int, raw: bytes, buf: bytes = b"", start: int = 0,
                 prev: bytes = b"", valid: int | None = None) -> None:
        self.line_no = line_no  # 1-based, counting "\n" as editors do
        self.offset = offset  # byte offset of the line start in the (decompressed) stream
        self.raw = raw  # the logical line: between "\r"/"\n" boundaries, at most MAX_LINE bytes
        self._buf, self._start, self._prev = buf, start, prev
        self._valid = len(buf) if valid is None else valid  # the buffer holds log bytes up to here
        # the patterns the prefilter found possible for this line (PATTERNS order); None: any (not checked, or a
        # line a terminal may have wrapped)
        self.pats: tuple[Pattern, ...] | None = None

    def after(self, limit: int = 8192) -> bytes:
        """Up to `limit` bytes after this line (for lines a terminal hard-wrapped); less at a buffer boundary."""
        lo = self._start + len(self.raw)
        return bytes(self._buf[lo:min(self._valid, lo + limit)])

    @property
    def before(self) -> bytes:
        lo = max(0, self._start - CONTEXT)
        out = self._buf[lo:self._start]
        if len(out) < CONTEXT and self._prev:
            out = self._prev[len(self._prev) - (CONTEXT - len(out)):] + out
        return out

    def __repr__(self) -> str:
        return f"Candidate({self.line_no}, {self.raw[:60]!r})"


class Prefilter:
    """Finds the candidate lines: lines with a marker of a pattern (every marker in the head of a log; past it, every
    marker of a failure pattern and the ANCHORS, see `_plan`) whose loosened regex also matches (see oomfix.prefilter), so that ordinary lines that merely contain a
    marker word ("indexing errors", "see_memory_usage") never reach the parser.

    This class is the pure-Python engine (one bytes.find pass per literal); `fastscan.HyperscanPrefilter` finds
    the same literals in one pass. Both search the same literals in the same places and confirm lines with the same
    `accept`, so they give the same candidates and the same diagnoses.
    """

    name = "python"

    def __init__(self, patterns: tuple[Pattern, ...] | None = None, extra: tuple[Pattern, ...] = ()) -> None:
        self.patterns = tuple(extra) + (PATTERNS if patterns is None else tuple(patterns))
        self.plan = _plan(self.patterns, len(extra))
        self.markers = self.plan.head_literals
        self.anchors = self.plan.tail_literals
        self.longest = max(len(m) for m in self.markers)
        self._verdicts: dict[tuple, object] = {}

    def with_patterns(self, patterns: tuple[Pattern, ...], n_user: int) -> "Prefilter":
        """The same engine for another pattern tuple (user patterns first)."""
        if patterns == self.patterns:
            return self
        return type(self)(patterns[n_user:], patterns[:n_user])

    def _find(self, buf: bytes, start: int, end: int, literals: tuple[bytes, ...]) -> list[tuple[int, bytes]]:
        hits = []
        find = buf.find
        for m in literals:
            i = find(m, start, end)
            while i != -1:
                hits.append((i, m))
                i = find(m, i + 1, end)
        return hits

    def find(self, buf: bytes, end: int, base: int = 0) -> list[tuple[int, bytes]]:
        """(offset, literal) of every literal hit: every marker in the head, the tail literals past it."""
        head_end = min(end, max(0, HEAD_BYTES - base))
        hits: list[tuple[int, bytes]] = []
        if head_end > 0:
            hits += self._find(buf, 0, min(end, head_end + self.longest), self.markers)
        if head_end < end:
            hits += self._find(buf, max(0, head_end - self.longest), end, self.anchors)
        return hits

    def check(self, raw: bytes, head: bool, lits: set) -> "tuple[Pattern, ...] | bool":
        """`accept`, once per template: a line like one checked before but for its digits (a per-step line) gets the
        same verdict, when no pattern that could match it names a digit."""
        if self.plan.digit_matters(lits, head) or b"\x1b" in raw or b"      " in raw:
            return self.accept(raw, head, lits)
        key = (head, frozenset(lits), raw.translate(_ONES))
        got = self._verdicts.get(key)
        if got is None:
            if len(self._verdicts) >= 8192:
                self._verdicts.clear()
            got = self._verdicts[key] = self.accept(raw, head, lits)
        return got

    def accept(self, raw: bytes, head: bool, lits: set[bytes]) -> "tuple[Pattern, ...] | bool":
        """The patterns (in PATTERNS order) a line found through `lits` can match; False: not a candidate."""
        plan = self.plan
        ids = plan.ids_for(raw, head, lits)
        return tuple(self.patterns[i] for i in ids) if ids else False


_FOLLOW_RX = re.compile(b"|".join(re.escape(trig) for trig, _n in FOLLOW))  # one C-level test per candidate
_ONES = bytes.maketrans(b"123456789", b"111111111")  # "0" kept: a pattern may name it ("0x", "to 0")


_FAILURE_ROLES = frozenset({_P.CAUSE, _P.WEAK, _P.EXCEPTION, _P.DEATH, _P.AGENT_SIGNAL, _P.CLOSING, _P.TABLE_SECTION,
                            _P.TRACEBACK, _P.ERROR_LEVEL})


@functools.lru_cache(maxsize=16)
def _plan(patterns: tuple[Pattern, ...], n_user: int) -> "Plan":
    from oomfix.prefilter import Plan

    # Past the head, a pattern that reports a failure counts through every one of its markers, like a user pattern:
    # a failure is found wherever it is in a multi-GB log. Only state and run-parameter patterns (phases, the HF
    # block, the OOM's numbers) are limited to the head, to their anchors and to the lines after a FOLLOW trigger.
    failure = frozenset(i for i, p in enumerate(patterns) if i < n_user or p.role in _FAILURE_ROLES)
    return Plan(patterns, ANCHORS, failure)


@functools.lru_cache(maxsize=8)
def default_prefilter(extra: tuple[Pattern, ...] = ()) -> Prefilter:
    """Hyperscan where its wheel is installed (OOMFIX_ENGINE=python forces the pure-Python engine).
    `extra`: user patterns, tried first and searched everywhere."""
    if os.environ.get("OOMFIX_ENGINE", "") != "python":
        try:
            from oomfix.fastscan import HyperscanPrefilter
            return HyperscanPrefilter(None, extra)
        except ImportError:
            pass
    return Prefilter(None, extra)


def _line_at(buf: bytes, pos: int, end: int) -> tuple[int, int, int]:
    """(start, stop, next) of the physical line at `pos`; for a tqdm line, start is its last "\r" segment."""
    nl = buf.find(b"\n", pos, end)
    stop = nl if nl != -1 else end
    body_end = stop - 1 if stop > pos and buf[stop - 1:stop] == b"\r" else stop
    start = max(pos, buf.rfind(b"\r", pos, body_end) + 1)
    return start, body_end, stop + 1


def open_log(path: str) -> tuple[BinaryIO, str]:
    """Open a log (a path, "-" for stdin, gzip detected by its magic bytes). Returns the stream and its name."""
    if path == "-":
        raw: BinaryIO = sys.stdin.buffer
        name = "<stdin>"
    else:
        name = path
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise InputError(f"{path}: no such file") from None
        except OSError as e:
            raise InputError(f"{path}: cannot read: {e.strerror}") from None
        if stat.S_ISDIR(st.st_mode):
            raise InputError(f"{path}: is a directory, not a log")
        try:
            if stat.S_ISFIFO(st.st_mode):
                # a pipe (`<(zcat x.gz)`) is fine; a FIFO nobody writes to must not hang: open without blocking,
                # then read normally (no writer reads as end of file)
                fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
                os.set_blocking(fd, True)
                raw = os.fdopen(fd, "rb")
            else:
                raw = open(path, "rb")  # noqa: SIM115 - closed by the caller
        except PermissionError:
            raise InputError(f"{path}: permission denied") from None
        except OSError as e:
            raise InputError(f"{path}: cannot read: {e.strerror}") from None
    buffered = raw if isinstance(raw, io.BufferedReader) else io.BufferedReader(raw)  # type: ignore[arg-type]
    try:
        head = buffered.peek(2)[:2]
    except OSError as e:
        raise InputError(f"{name}: cannot read: {e.strerror}") from None
    if head == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=buffered, mode="rb"), name  # type: ignore[return-value]
    return buffered, name


def _looks_binary(sample: bytes) -> bool:
    if not sample:
        return False
    controls = sum(1 for b in sample[:SNIFF] if b < 32 and b not in (9, 10, 12, 13, 27, 8))
    return sample.count(0) > 16 or controls > len(sample[:SNIFF]) // 10


def _size_hint(stream: BinaryIO) -> int | None:
    """Bytes left in a plain file, so that a small log does not get a buffer sized for a huge one."""
    if isinstance(stream, gzip.GzipFile):
        return None
    try:
        st = os.fstat(stream.fileno())
    except (OSError, AttributeError, io.UnsupportedOperation):
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    return st.st_size


def _readinto(stream: BinaryIO, into: memoryview, name: str) -> int:
    """Fill `into` as far as the stream allows (pipes and gzip return short reads); 0 at end of file."""
    got = 0
    try:
        while got < len(into):
            k = stream.readinto(into[got:])  # type: ignore[attr-defined]
            if not k:
                break
            got += k
        return got
    except (EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise InputError(f"{name}: truncated or corrupt gzip data ({e})") from None
    except OSError as e:
        raise InputError(f"{name}: cannot read: {e.strerror or e}") from None


def scan(stream: BinaryIO, name: str, prefilter: Prefilter | None = None,
         chunk_size: int = CHUNK, stats: dict[str, int] | None = None,
         before_refill: list[Callable[[], None]] | None = None) -> Iterator[Candidate]:
    """Yield the candidate lines of a log in order; `stats` gets the byte and line counts. `before_refill`: called
    before the buffer the candidates point into is overwritten (a consumer that holds some copies them then)."""
    prefilter = prefilter or default_prefilter()
    # one buffer, reused: no per-chunk allocation or concatenation. Candidates slice it before the next read.
    hint = _size_hint(stream)
    room = chunk_size if hint is None else max(1, min(chunk_size, hint + 1))
    arena = bytearray(room + MAX_CARRY + 256)
    view = memoryview(arena)
    carry_len = 0
    prev_tail = b""
    base = 0  # stream offset of buf[0]
    line_no = 1
    first = True
    eof = False
    follow_left = 0  # lines still owed to a FOLLOW trigger near the end of the previous buffer
    buf = arena
    end = counted = 0

    def follow(pos: int, n: int) -> Generator[Candidate, None, tuple[int, int]]:
        """The n lines from `pos` of the current buffer (the lines after a FOLLOW trigger): (where they end, how
        many are still owed). Reads the loop's current buffer state."""
        nonlocal line_no, counted
        while n and pos < end:
            seg, fstop, nxt = _line_at(buf, pos, end)
            line_no += buf.count(b"\n", counted, pos)
            counted = pos
            yield Candidate(line_no, base + seg, bytes(buf[seg:min(fstop, seg + MAX_LINE)]), buf, seg, prev_tail,
                            size)
            n -= 1
            pos = nxt
        return pos, n

    while not eof:
        n = _readinto(stream, view[carry_len:carry_len + min(chunk_size, len(arena) - 256 - carry_len)], name)
        if first:
            if _looks_binary(bytes(view[:min(n, SNIFF)])):
                raise InputError(f"{name}: not a text log (binary data)")
            first = False
        eof = n == 0
        if stats is not None:
            stats["bytes"] = stats.get("bytes", 0) + n
        size = carry_len + n
        if size == 0:
            break
        if eof:
            end = size
        else:
            nl = buf.rfind(b"\n", 0, size)
            end = max(nl, buf.rfind(b"\r", max(nl, 0), size)) + 1
            if end == 0:
                if size < MAX_CARRY:
                    carry_len = size
                    continue
                end = size - 256  # cut an endless line; the 256 carried bytes catch a split marker
        counted = 0

        # lines owed to a trigger at the end of the previous buffer come first; last_stop: end of the last line yielded
        last_stop, follow_left = yield from follow(0, follow_left)
        hits = sorted(prefilter.find(buf, end, base))
        k = 0
        while k < len(hits):
            hit, lit = hits[k]
            k += 1
            if hit < last_stop:
                continue  # same line as a hit already yielded
            ln = buf.rfind(b"\n", 0, hit)
            start = max(ln, buf.rfind(b"\r", ln + 1, hit)) + 1
            stop_n = buf.find(b"\n", hit, end)
            stop_r = buf.find(b"\r", hit, stop_n if stop_n != -1 else end)
            stop = stop_r if stop_r != -1 else (stop_n if stop_n != -1 else end)
            lits = {lit}
            while k < len(hits) and hits[k][0] < stop:
                lits.add(hits[k][1])  # the other hits of this line
                k += 1
            lo = start if stop - start <= MAX_LINE else max(start, hit - MAX_LINE // 2)
            hi = min(stop, lo + MAX_LINE)
            raw = bytes(buf[lo:hi])
            pats = prefilter.check(raw, base + start < HEAD_BYTES, lits)
            if pats is False:
                continue  # a marker word in an ordinary line
            line_no += buf.count(b"\n", counted, start)
            counted = start
            cand = Candidate(line_no, base + start, raw, buf, start, prev_tail, size)
            cand.pats = pats  # type: ignore[assignment]
            yield cand
            last_stop = stop + 1
            n_follow = max((n for trig, n in FOLLOW if trig in raw), default=0) if _FOLLOW_RX.search(raw) else 0
            # the lines after a trigger: the HF block, the summary table, the allocator's numbers
            pos = last_stop
            if pos < end and buf[pos:pos + 1] == b"\n":
                pos += 1  # the "\n" of a CRLF line
            pos, follow_left = yield from follow(pos, n_follow)
            last_stop = max(last_stop, pos)
        for hook in before_refill or ():
            hook()
        line_no += buf.count(b"\n", counted, end)
        prev_tail = bytes(buf[max(0, end - CONTEXT):end])
        carry_len = size - end
        if carry_len:
            arena[:carry_len] = arena[end:size]
        base += end
