"""Read logs as streams of bytes and hand out only the lines that can matter.

A multi-GB log is mostly tqdm bars and loss dicts. The reader never decodes or splits those: a prefilter finds, in
large binary buffers, the lines that one of the patterns can match (oomfix.prefilter: a marker and the pattern's
loosened regex; oomfix.pyscan and oomfix.fastscan: the two engines that find them), and only those lines are cut
out, decoded and cleaned, each with the patterns it can match. State lines (checkpoint saves, evaluation markers:
thousands in a long run) are not candidates: the reader looks for them around each candidate and hands on only the
first after it and the last few before the next one. Memory is bounded by the buffer size, whatever the log's size
or line length.
"""
from __future__ import annotations

import bisect
import gzip
import io
import os
import re
import stat
import sys
import threading
import zlib
from collections.abc import Callable, Generator, Iterator
from typing import BinaryIO

from oomfix.errors import InputError
from oomfix import patterns as _P
from oomfix.patterns import FOLLOW, HEAD_BYTES, Pattern
# the pure-Python engine and what both engines share (re-exported: the rest of oomfix and the tests import them here)
from oomfix.pyscan import MAX_LINE, Prefilter, default_prefilter, _bounds, _cut

CHUNK = 8 << 20
# a "line" longer than this (a \r-less progress stream, a binary blob) is cut; markers are still found
MAX_CARRY = 1 << 20
CONTEXT = 64 << 10  # bytes kept before each candidate for look-back (tracebacks, progress bars)
SNIFF = 64 << 10
STATE_KEEP = 4  # state lines handed on before each candidate (events holds as many)
RUN_EVERY = 50  # in a run of identical lines, one in this many is handed on (events.REPEAT_GAP: 100)


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
        return self.tail(CONTEXT)

    def tail(self, n: int) -> bytes:
        """The last `n` (at most CONTEXT) bytes before this line: a copy of only what the caller reads."""
        n = min(n, CONTEXT)
        lo = max(0, self._start - n)
        out = bytes(self._buf[lo:self._start])
        if len(out) < n and self._prev:
            out = self._prev[len(self._prev) - (n - len(out)):] + out
        return out

    def __repr__(self) -> str:
        return f"Candidate({self.line_no}, {self.raw[:60]!r})"


def _first(item: tuple) -> int:
    return item[0]


class _Stretch:
    """(scan) A stretch of settled candidates (`_SETTLED`: run parameters, phase starts, clean finishes) with no other
    candidate between them. Such lines matter through their first and last lines (classify: the first launch command,
    the last micro batch, the last phase before a failure), not through their number: a log that prints "Process
    rank: N, world size: M" or an HF block on every few lines would otherwise cost a full parse per line (issue 16).
    The first line of each pattern set is handed on; the last one is held here until the stretch ends (another
    candidate, the buffer's end) and then handed on in its place. A hit through a key (a literal, a pattern) of such a
    line, seen before in the stretch, is not even cut out: the last one per key is noted (`late`), and only it is read
    when the stretch ends."""

    __slots__ = ("seen", "keys", "late", "settled")

    def __init__(self) -> None:
        self.seen: set[tuple[int, ...]] = set()  # the pattern sets handed on in this stretch
        self.keys: set[object] = set()  # the keys of their lines
        self.late: dict[object, int] = {}  # key -> the position of its last hit, not read yet
        self.settled: dict[tuple[int, ...], tuple[int, int, bytes, object]] = {}  # the last line of each pattern set

    def hold(self, lits: set, line: tuple[int, int, bytes, object]) -> bool:
        """A settled candidate (start, stop, raw, patterns) found through `lits`: True when it is held (its pattern
        set was handed on before in the stretch), False when it is the first of its set (hand it on)."""
        ident = tuple(map(id, line[3]))  # type: ignore[call-overload]
        self.keys.update(lits)
        if ident in self.seen:
            self.settled[ident] = line
            return True
        self.seen.add(ident)
        return False

    def end(self) -> None:
        """Another kind of candidate: a new stretch begins after it."""
        self.seen.clear()
        self.keys.clear()

    def pending(self) -> bool:
        return bool(self.settled or self.late)

    def take(self, read: Callable[[object, int], tuple[int, int, bytes, object] | None]) -> list[tuple]:
        """The held lines, in order, and those of the noted hits (`read` turns a key and position into its line, or
        None); nothing is held after."""
        settled = self.settled
        for key, pos in self.late.items():
            line = read(key, pos)
            if line is None:
                continue
            ident = tuple(map(id, line[3]))  # type: ignore[call-overload]
            if ident not in settled or settled[ident][0] < line[0]:
                settled[ident] = line
        self.late.clear()
        out = sorted(settled.values(), key=_first)
        settled.clear()
        return out


_FOLLOW_RX = re.compile(b"|".join(re.escape(trig) for trig, _n in FOLLOW))  # one C-level test per candidate
# candidates whose repeats carry nothing but their first and last lines (reader.scan); a PHASE candidate is a
# FOLLOW trigger (the others are state lines): with it go its FOLLOW lines. A launch's start (RUN_START) counts as the
# last one before a failure (classify: the attempt)
_SETTLED = frozenset({_P.RUN, _P.FINISHED, _P.PHASE, _P.RUN_START})


def _line_at(buf: bytes, pos: int, end: int) -> tuple[int, int, int]:
    """(start, stop, next) of the physical line at `pos`; for a tqdm line, start is its last "\r" segment."""
    nl = buf.find(b"\n", pos, end)
    stop = nl if nl != -1 else end
    body_end = stop - 1 if stop > pos and buf[stop - 1:stop] == b"\r" else stop
    start = max(pos, buf.rfind(b"\r", pos, body_end) + 1)
    return start, body_end, stop + 1


class _Read(threading.Thread):
    """One read into a buffer, in the background."""

    def __init__(self, stream: BinaryIO, into: memoryview, name: str) -> None:
        super().__init__(daemon=True)
        self._args = (stream, into, name)
        self._n = 0
        self._error: BaseException | None = None
        self.start()

    def run(self) -> None:
        try:
            self._n = _readinto(*self._args)
        except BaseException as e:  # noqa: BLE001 - handed to the reading thread, raised there
            self._error = e

    def result(self) -> int:
        self.join()
        if self._error is not None:
            raise self._error
        return self._n


def _copied(c: Candidate) -> Candidate:
    """A candidate that holds a copy of what parsing it reads (CONTEXT before it, 8 KB after), not the buffer."""
    lo = max(0, c._start - CONTEXT)
    hi = min(c._valid, c._start + len(c.raw) + 8192)
    out = Candidate(c.line_no, c.offset, c.raw, bytes(c._buf[lo:hi]), c._start - lo, c._prev if lo == 0 else b"")
    out.pats = c.pats
    return out


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


_CONTROLS = bytes(b for b in range(32) if b not in (9, 10, 12, 13, 27, 8))  # control bytes no text log holds


def _looks_binary(sample: bytes) -> bool:
    if not sample:
        return False
    head = sample[:SNIFF]
    controls = len(head) - len(head.translate(None, _CONTROLS))  # (at C speed: it runs on every log)
    return sample.count(0) > 16 or controls > len(head) // 10


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


# called with the number of bytes of each read, from the reading thread too (oomfix/progress.py shows them)
PROGRESS: Callable[[int], None] | None = None


def _readinto(stream: BinaryIO, into: memoryview, name: str) -> int:
    """Fill `into` as far as the stream allows (pipes and gzip return short reads); 0 at end of file."""
    got = 0
    try:
        while got < len(into):
            k = stream.readinto(into[got:])  # type: ignore[attr-defined]
            if not k:
                break
            got += k
        if PROGRESS is not None:
            PROGRESS(got)
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
    # buffers reused: no per-chunk allocation or concatenation. Candidates slice them before they are read into again.
    hint = _size_hint(stream)
    room = chunk_size if hint is None else max(1, min(chunk_size, hint + 1))
    # the pure-Python engine holds back a window of bytes in each buffer: read ahead for the lines whose window
    # reaches back before the buffer's end, and whole in the last buffer (Prefilter.find)
    hold = prefilter.window
    cap = room + MAX_CARRY + hold + 256
    # two buffers when the log is bigger than one: the next is read (in a thread: reading releases the GIL) while
    # this one is searched
    arenas: list[bytearray | None] = [bytearray(cap), None]
    cur = 0
    pending: _Read | None = None
    carry_len = 0
    prev_tail = b""
    base = 0  # stream offset of buf[0]
    line_no = 1
    first = True
    eof = False
    follow_left = 0  # lines still owed to a FOLLOW trigger near the end of the previous buffer
    buf: bytearray = arenas[0]  # type: ignore[assignment]
    end = counted = size = 0

    lazy_pats = prefilter.lazy_pats
    window = prefilter.window
    line_pats = prefilter.line_pats
    dirt_only = prefilter.dirt_only
    state_rx = prefilter.state_rx
    owe_first = False  # the first state line after the last candidate is still to be handed on

    held: list[Candidate] = []  # the last state lines of earlier buffers, copied, not yet handed on
    raw_of = [b""]  # the candidate line run_of looks at

    def make(start: int, raw: bytes, pats: object) -> Candidate:
        """The candidate for the line at buf[start:], numbered (lines are counted up to it)."""
        nonlocal line_no, counted
        line_no += buf.count(b"\n", counted, start)
        counted = start
        cand = Candidate(line_no, base + start, raw, buf, start, prev_tail, size)
        cand.pats = pats  # type: ignore[assignment]
        return cand

    def hand_on(lo: int, hi: int, at_end: bool = False) -> Generator[Candidate, None, None]:
        """The state lines in buf[lo:hi] (after the last candidate, before the next one or the buffer's end) that a
        diagnosis can use: the first one after the last candidate (when still owed) and the last STATE_KEEP before
        the next candidate. At a buffer's end those are copied and held, so that what is handed on does not depend
        on where buffers end (nor on the engine)."""
        nonlocal owe_first, held
        seen: set[int] = set()

        def take(pos: int, key: object) -> tuple[int, bytes, object] | None:
            start, stop = _bounds(buf, pos, hi)
            if start in seen or start < lo:
                return None
            seen.add(start)
            raw = _cut(buf, start, stop, pos)
            pats = prefilter.check(raw, base + start < HEAD_BYTES, {key} | prefilter.state_keys(raw))
            if pats is False or not all(id(p) in lazy_pats for p in pats):
                return None
            return start, raw, pats

        first = None
        floor = lo
        if owe_first:
            for pos, key in prefilter.state_after(buf, lo, hi):
                first = take(pos, key)
                if first is not None:
                    owe_first = False
                    floor = first[0] + len(first[1])
                    break
        chosen = []
        if first is not None or not owe_first:  # (still owed: there is no state line in the range at all)
            for pos, key in prefilter.state_before(buf, floor, hi):
                got = take(pos, key)
                if got is not None:
                    chosen.append(got)
                    if len(chosen) == STATE_KEEP:
                        break
        if first is not None:
            yield make(*first)
        new = [make(*c) for c in reversed(chosen)]
        if at_end:
            held = (held + [_copied(c) for c in new])[-STATE_KEEP:]
        else:
            yield from (held + new)[-STATE_KEEP:]
            held = []

    def follow(pos: int, n: int) -> Generator[Candidate, None, tuple[int, int]]:
        """The n lines from `pos` of the current buffer (the lines after a FOLLOW trigger): (where they end, how
        many are still owed). Reads the loop's current buffer state."""
        nonlocal line_no, counted
        while n and pos < end:
            seg, fstop, nxt = _line_at(buf, pos, end)
            line_no += buf.count(b"\n", counted, pos)
            counted = pos
            cand = Candidate(line_no, base + seg, bytes(buf[seg:min(fstop, seg + MAX_LINE)]), buf, seg, prev_tail,
                             size)
            # the patterns it can match, as for a line found through a marker (tried with every pattern, the 600
            # lines after each ChildFailedError of a job restarted 400 times in one log cost 6 s)
            cand.pats = line_pats(cand.raw)  # type: ignore[assignment]
            if cand.pats:
                yield cand  # (a line no pattern can match is nothing to read: the 600 after a ChildFailedError)
            n -= 1
            pos = nxt
        return pos, n

    from oomfix import events as _events  # (events imports this module)

    def repeatable(pats: object) -> bool:
        """Would events skip the copies of this line amid a run (events._template)? Then only some of them need to be
        found. (Byte-identical neighbours never join into one record, whatever their length: events._continues.)"""
        return bool(pats) and not _events._NOT_REPEAT_RX.search(raw_of[0]) and \
            all(p.role in _events.REPEATABLE and not _events._digit_sensitive(p) for p in pats)  # type: ignore[attr-defined]

    def run_of(start: int, stop: int, raw: bytes, pats: object) -> Generator[Candidate, None, int]:
        """The copies of the line buf[start:stop] that follow it, byte for byte (an error printed by every step or
        every thread: 2M lines of "RuntimeError: boom" cost 40 s and 230 MB, issue 23): counted at C speed, one every
        RUN_EVERY lines handed on and the last one (what events parses of such a run: events.REPEAT_GAP). Returns
        where the run ends."""
        pos = stop + 1
        if buf[stop:pos] != b"\n":
            return pos
        line = bytes(buf[start:pos])
        n = len(line)
        # RUN_EVERY copies compared at once, for lines short enough (a copy of a 4 MB line times 50 is 200 MB)
        block = line * RUN_EVERY if n * RUN_EVERY <= 1 << 16 else None
        copies = 0
        while True:
            if block is not None and pos + len(block) <= end and buf.startswith(block, pos):
                pos += len(block)
                copies += RUN_EVERY
                yield make(pos - n, raw, pats)  # the last copy of each block: one every RUN_EVERY lines
                continue
            if pos + n <= end and buf.startswith(line, pos):
                pos += n
                copies += 1
                if block is None and copies % RUN_EVERY == 0:
                    yield make(pos - n, raw, pats)
                continue
            break
        if copies % RUN_EVERY:
            yield make(pos - n, raw, pats)  # the last copy: events parses the end of a run
        return pos

    def emit(last_stop: int, start: int, stop: int, raw: bytes, pats: object) -> Generator[Candidate, None, int]:
        """Hand on the candidate buf[start:stop], the state lines before it and the lines that follow it; returns
        the end of what was handed on."""
        nonlocal owe_first, follow_left
        yield from hand_on(last_stop, start)
        yield make(start, raw, pats)
        owe_first = True
        last_stop = stop + 1
        n_follow = max((n for trig, n in FOLLOW if trig in raw), default=0) if _FOLLOW_RX.search(raw) else 0
        # the lines after a trigger: the HF block, the summary table, the allocator's numbers
        pos = last_stop
        if pos < end and buf[pos:pos + 1] == b"\n":
            pos += 1  # the "\n" of a CRLF line
        pos, follow_left = yield from follow(pos, n_follow)
        last_stop = max(last_stop, pos)
        raw_of[0] = raw
        if not n_follow and last_stop < end and (start == 0 or buf[start - 1] == 10) and repeatable(pats):
            last_stop = yield from run_of(start, stop, raw, pats)
        return last_stop

    # settled lines (run parameters, phase starts, clean finishes): first and last per stretch (_Stretch)
    stretch = _Stretch()
    # (bound once: the loop below tests them at every hit)
    seen_keys, late = stretch.keys, stretch.late
    quiet_head, quiet_tail = prefilter.settled_keys(_SETTLED)
    muted = prefilter.muted

    def read_late(key: object, pos: int) -> tuple[int, int, bytes, object] | None:
        """The settled line a noted hit is in (start, stop, raw, patterns), or None."""
        start, stop = _bounds(buf, pos, end)
        raw = _cut(buf, start, stop, pos)
        pats = prefilter.check(raw, base + start < HEAD_BYTES, {key})
        if pats is False or not all(p.role in _SETTLED for p in pats):
            return None
        return start, stop, raw, pats

    def flush(last_stop: int) -> Generator[Candidate, None, int]:
        for start, stop, raw, pats in stretch.take(read_late):
            if start >= last_stop:  # (else a trigger's FOLLOW lines above took it in)
                last_stop = yield from emit(last_stop, start, stop, raw, pats)
        return last_stop

    def _rounds() -> Iterator[Candidate]:
        nonlocal buf, cur, pending, carry_len, prev_tail, base, line_no, first, eof, follow_left, end, counted, size
        while not eof:
            if pending is not None:
                n = pending.result()
                pending = None
            else:
                n = _readinto(stream, memoryview(buf)[carry_len:carry_len + min(chunk_size, cap - 256 - carry_len)],
                              name)
            if first:
                if _looks_binary(bytes(buf[:min(n, SNIFF)])):
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
                lim = size - hold
                nl = buf.rfind(b"\n", 0, lim) if lim > 0 else -1
                end = max(nl, buf.rfind(b"\r", max(nl, 0), lim)) + 1 if lim > 0 else 0
                if end == 0:
                    if size < MAX_CARRY + hold:
                        carry_len = size
                        continue
                    end = lim - 256  # cut an endless line; the 256 carried bytes catch a split marker
            counted = 0
            if not eof and (hint is None or base + size < hint):
                nxt = arenas[1 - cur]
                if nxt is None:
                    nxt = arenas[1 - cur] = bytearray(cap)
                left = size - end
                nxt[:left] = buf[end:size]
                pending = _Read(stream, memoryview(nxt)[left:left + min(chunk_size, cap - 256 - left)], name)

            # lines owed to a trigger at the end of the previous buffer come first; last_stop: end of the last line
            # yielded
            last_stop, follow_left = yield from follow(0, follow_left)
            # (the Hyperscan engine hands its hits over block by block: their number is bounded whatever the log holds)
            muted.clear()
            for block in prefilter.find_blocks(buf, end, base, size, eof):
                hits = sorted(block)
                # the positions of the muted keys' hits in this block (in order): what the fast path below would have
                # noted one by one, taken in bulk (quiet_upto) before each flush
                quiet_hits = prefilter.muted_hits
                quiet_done = dict.fromkeys(quiet_hits, 0)

                def quiet_upto(pos: int) -> None:
                    for key, at in quiet_hits.items():
                        i = bisect.bisect_left(at, pos, quiet_done[key])
                        if i > quiet_done[key]:
                            late[key] = at[i - 1]
                            quiet_done[key] = i

                k = 0
                while k < len(hits):
                    hit, lit = hits[k]
                    k += 1
                    if hit < last_stop:
                        continue  # same line as a hit already yielded
                    if lit in seen_keys and lit in (quiet_head if base + hit < HEAD_BYTES else quiet_tail) \
                            and (k == len(hits) or hits[k][1] == lit or buf.find(b"\n", hit, hits[k][0]) != -1):
                        late[lit] = hit  # (alone on its line, or with more of the same)
                        continue
                    start, stop = _bounds(buf, hit, end)
                    lits = {lit}
                    while k < len(hits) and hits[k][0] < stop:
                        lits.add(hits[k][1])  # the other hits of this line
                        k += 1
                    if lits == dirt_only and buf.find(b"\x1b", start, stop) == -1 and \
                            buf.find(b"      ", start, stop) == -1:
                        continue  # found only for colour codes or padding, and the line has neither
                    raw = _cut(buf, start, stop, hit)
                    if not window and state_rx.search(raw):
                        lits |= prefilter.state_keys(raw)  # the line is also a state line (the window engine's check
                        # tests every literal, the state ones too)
                    pats = prefilter.check(raw, base + start < HEAD_BYTES, lits)
                    if pats is False or all(id(p) in lazy_pats for p in pats):
                        continue  # a marker word in an ordinary line (a state line alone is found by hand_on)
                    reset = False
                    if all(p.role in _SETTLED for p in pats):
                        if stretch.hold(lits, (start, stop, raw, pats)):
                            continue  # (the last so far of its pattern set)
                    else:
                        stretch.end()
                        reset = True
                    if quiet_hits:
                        quiet_upto(start)
                    if stretch.pending():
                        last_stop = yield from flush(last_stop)
                        if start < last_stop:
                            continue  # a FOLLOW line of a trigger just handed on
                    last_stop = yield from emit(last_stop, start, stop, raw, pats)
                    if reset and quiet_hits:
                        # a new stretch: the muted keys' later hits count as any hit does (the first one is handed on)
                        rest = [(pos, key) for key, at in quiet_hits.items() for pos in at[quiet_done[key]:]]
                        hits[k:] = sorted(hits[k:] + rest)
                        quiet_hits = {}
                if quiet_hits:
                    quiet_upto(end + 1)
                # the next block: of a key seen in this stretch, only its last hit matters (its copies are not even
                # handed over from the engine one by one)
                muted.clear()
                muted.update(k for k in seen_keys if k in quiet_head and k in quiet_tail)
            if stretch.pending():
                last_stop = yield from flush(last_stop)  # (they point into this buffer)
            yield from hand_on(last_stop, end, at_end=True)
            for hook in before_refill or ():
                hook()
            line_no += buf.count(b"\n", counted, end)
            prev_tail = bytes(buf[max(0, end - CONTEXT):end])
            if pending is not None:
                cur = 1 - cur
                buf = arenas[cur]  # type: ignore[assignment]
                carry_len = size - end
            else:
                carry_len = size - end
                if carry_len:
                    buf[:carry_len] = buf[end:size]
            base += end

    try:
        yield from _rounds()
    finally:
        if pending is not None:
            pending.join()  # no thread left writing into a buffer

