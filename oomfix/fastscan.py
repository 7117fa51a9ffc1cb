"""The Hyperscan engine for the reader's prefilter: the patterns' own (loosened) regexes, all in one pass.

Intel's Hyperscan (the `hyperscan` wheel) matches every pattern's loosened regex (oomfix.prefilter) at once with SIMD,
and says which pattern matched where: an ordinary line that merely holds a marker word is never touched by Python.
The lines it reports are confirmed exactly as the pure-Python engine confirms the lines its literals find
(`Plan.ids`: a scoped marker present, the loosened regex matching), so both engines give the same candidates. Lines
with colour codes or progress-bar padding are found too and tested in their cleaned forms, as the pure-Python engine
does. State patterns (checkpoint saves, evaluation markers) have a small database of their own, searched only around
the candidates (reader.scan); the main one notes where a buffer's first state marker is, so that a buffer without
any is never searched for them.
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterator

import hyperscan

from oomfix import cache
from oomfix.patterns import ANCHORS, HEAD_BYTES, Pattern
from oomfix.prefilter import PADDED_B
from oomfix.pyscan import Prefilter

# A line with a colour code or a progress bar's padding between two words, that also holds a literal the pure-Python
# engine looks for (so that it finds the line too): confirmed on its cleaned forms. _HEAD: with a head literal (counts
# only for lines in the head), _TAIL: with an anchor.
_HEAD, _TAIL = -1, -2
_STATE = -3  # the first state marker of a buffer (not a hit: it sets where state lines may start)
# a colour code, or padding between two word characters (prefilter.PADDED_B): any six spaces were cheaper to find, but
# a table drawn with aligned columns ("|     PyTorch CUDA memory summary      |") then sent each of its lines to
# Python for the cleaned-forms check (issue 16)
_DIRT = rb"(?:\x1b|[\w\x80-\xff] {6,}[\w\x80-\xff])"
_STATE_REACH = 256  # longest state match looked for across a block's start
BLOCK = 1 << 20  # bytes of a buffer scanned at once (find_blocks)


def _dirty(literals: tuple[bytes, ...]) -> bytes:
    """A line with one of the literals and dirt. The match runs on to the line's end, so that it ends at one offset
    per line: ended at the dirt, a run of spaces (an 8 MB line of them after "Error:") reported every offset of it,
    millions of calls into Python and a list of their offsets (1.75 GB, issue 23)."""
    alt = b"(?:" + b"|".join(_escape(m) for m in literals) + b")"
    return b"(?:" + alt + rb"[^\r\n]*" + _DIRT + b"|" + _DIRT + rb"[^\r\n]*" + alt + rb")[^\r\n]*(?:[\r\n]|$)"


def _compile(expressions: list[bytes], single: int = 0) -> "hyperscan.Database":
    """One database for all expressions (ids are list positions); an expression Hyperscan cannot run exactly is
    compiled in prefilter mode (a superset: the Python regex confirms every line anyway). The last `single` ones
    report their first match only."""
    flags = [0] * (len(expressions) - single) + [hyperscan.HS_FLAG_SINGLEMATCH] * single
    db = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
    try:
        db.compile(expressions=expressions, ids=list(range(len(expressions))), elements=len(expressions), flags=flags)
        return db
    except hyperscan.error:
        pass
    for i, e in enumerate(expressions[:len(expressions) - single]):
        try:
            hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK).compile(expressions=[e], ids=[0], elements=1, flags=[0])
        except hyperscan.error:
            flags[i] = hyperscan.HS_FLAG_PREFILTER
    db = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
    db.compile(expressions=expressions, ids=list(range(len(expressions))), elements=len(expressions), flags=flags)
    return db


def _database(expressions: list[bytes], single: int = 0) -> "hyperscan.Database":
    """The compiled database, from a per-user cache when this exact set of expressions was compiled before: compiling
    takes about a second, longer than diagnosing a small log."""
    key = hashlib.sha256(b"\0".join(expressions) + repr((getattr(hyperscan, "__version__", ""), single)).encode()
                         ).hexdigest()
    name = f"hyperscan-{key[:32]}.db"
    raw = cache.load(name)
    if raw is not None:
        try:
            db = hyperscan.loadb(raw, hyperscan.HS_MODE_BLOCK)
            db.scratch = hyperscan.Scratch(db)  # a loaded database comes without scratch space
            return db
        except (hyperscan.error, TypeError, ValueError):
            pass
    db = _compile(expressions, single)
    try:
        cache.store(name, hyperscan.dumpb(db))
    except hyperscan.error:
        pass
    return db


class HyperscanPrefilter(Prefilter):
    name = "hyperscan"

    def __init__(self, patterns: "tuple[Pattern, ...] | None" = None, extra: "tuple[Pattern, ...]" = ()) -> None:
        super().__init__(patterns, extra)
        plan = self.plan
        exprs: list[bytes] = []
        self._keys: list[int] = []
        # past the head, a pattern counts only through its tail markers (Plan.tail_markers): one that has none there
        # (a run parameter: "Process rank: 0, world size: 8", the HF block) is left out of the tail database, or
        # Hyperscan would report every such line of a multi-GB log for Python to drop (issue 16)
        texprs: list[bytes] = []
        tkeys: list[int] = []
        state: list[bytes] = []
        self._state_keys: list[int] = []
        for i, p in enumerate(self.patterns):
            lo = plan.loose[i]
            # no loosened regex (a user pattern): its markers find it, as in the pure-Python engine
            for e in ([lo.encode()] if lo is not None else [_escape(m) for m in p.markers]):
                # state patterns have their own small database, searched around the candidates only (reader.scan)
                (state if i in plan.lazy else exprs).append(e)
                (self._state_keys if i in plan.lazy else self._keys).append(i)
                if i not in plan.lazy and plan.tail_markers[i]:
                    texprs.append(e)
                    tkeys.append(i)
        def chunks(lits: tuple[bytes, ...]) -> list[tuple[bytes, ...]]:
            return [lits[k:k + 32] for k in range(0, len(lits), 32)]  # Hyperscan limits an expression's length

        # lines with colour codes or padding past the head: found through the anchors (the failure patterns' own
        # regexes above find their clean text in the raw bytes; colour codes sit around a message, not inside it).
        # An anchor is reported only in a line that also holds dirt: reported as a plain literal, every line of an
        # ordinary kind that says "exit" or "Kill" (torch's "process group has NOT been destroyed before we exit" on
        # every rank) was a call into Python and a line for `check` to drop (issue 16). In the head the head literals
        # (which include the anchors) do the same. "Anchor and dirt in one line" costs Hyperscan a look along the line
        # at every anchor (4x grep where every line says "exit"), so past the head a block is scanned with these
        # expressions only when it holds a colour code (_scan): padding alone ("segment          ation", a progress
        # bar drawn over a line) is looked for in the head only.
        tail = [_dirty(c) for c in chunks(tuple(m for m in plan.tail_literals if m in ANCHORS))]
        tail_keys = [_TAIL] * len(tail)
        head = [_dirty(c) for c in chunks(plan.head_literals)]
        head_keys = [_HEAD] * len(head)
        # the first state marker of a buffer (one report per marker and buffer): where the state search may stop
        first = [_escape(m) for m in plan.state_literals]
        # past the head the head-only literals drop out: a smaller database for the gigabytes after it
        self._tail_keys = tkeys + tail_keys + [_STATE] * len(first)
        self._tail_db = _database(texprs + tail + first, len(first))
        self._clean_keys = tkeys + [_STATE] * len(first)  # a tail block without colour codes
        self._clean_db = _database(texprs + first, len(first))
        self._head_clean_keys = self._keys + [_STATE] * len(first)  # a head block without colour codes or padding
        self._head_clean_db = _database(exprs + first, len(first))
        self._dirt_db = _database([_DIRT], 1)
        self._keys = self._keys + head_keys + [_STATE] * len(first)
        self._db = _database(exprs + head + first, len(first))
        self._floor = 0  # no state marker before this offset of the current buffer
        self.dirt_only = {_TAIL}
        self.window = 0  # every expression is searched everywhere, in one pass: no read-ahead, no windows
        self._state_db = _database(state) if state else None
        self._state_markers = [(i, self.patterns[i].markers) for i in sorted(plan.lazy)]

    def find(self, buf: bytes, end: int, base: int = 0, size: int | None = None,  # type: ignore[override]
             last: bool = True) -> list[tuple[int, int]]:
        """(offset, pattern id, or _HEAD/_TAIL for a line with colour codes or padding) of every match end."""
        return [h for block in self.find_blocks(buf, end, base, size, last) for h in block]

    def find_blocks(self, buf: bytes, end: int, base: int = 0, size: int | None = None,  # type: ignore[override]
                    last: bool = True) -> Iterator[list[tuple[int, int]]]:
        """`find` block by block: the buffer is scanned in line-aligned blocks of BLOCK bytes, so that the hits held
        at once are bounded (a million short error lines in one buffer held 2M hits, 230 MB). A match never spans
        two lines that matters: the line it ends in holds a match of its own (the loosened regexes run per line)."""
        self._floor = 0
        a = 0
        # the head's database runs on the lines that start in the head, the tail's on the others: a block ends at
        # the head's last line (a block that crossed it reported a run parameter's last copy past the head, which
        # then counted for nothing, in place of the head's last one)
        head_end = HEAD_BYTES - base
        while a < end:
            b = end if end - a <= BLOCK else buf.rfind(b"\n", a, a + BLOCK) + 1
            if b <= a:
                b = buf.find(b"\n", a + BLOCK, end) + 1 or end  # one line longer than a block: scanned whole
            if a < head_end < b:
                b = max(a + 1, buf.find(b"\n", head_end - 1, b) + 1 or b)  # (the line that holds the boundary: head)
            hits = self._scan(buf, a, b, base)
            yield hits
            a = b

    def _scan(self, buf: bytes, a: int, end: int, base: int) -> list[tuple[int, int]]:
        """The hits in buf[a:end]; sets the floor of the state search (no state marker before it) as far as known."""
        hits: list[tuple[int, int]] = []
        append = hits.append
        head = base + a < HEAD_BYTES
        if head:
            # (the head literals with dirt cost a look along the line at each of them: only where dirt is)
            db, keys = (self._db, self._keys) if _has_dirt(self._dirt_db, buf, a, end) else \
                (self._head_clean_db, self._head_clean_keys)
        elif buf.find(b"\x1b", a, end) != -1:
            db, keys = self._tail_db, self._tail_keys
        else:
            db, keys = self._clean_db, self._clean_keys

        floor = [end]
        # one hit per line and key: the reader wants a line's first hit and the set of its keys, and a line made of
        # one word repeated (8 MB of "Error ") would otherwise hold millions of them
        line_end = [-1]
        seen: set[int] = set()
        find = buf.find

        muted = self.muted
        self.muted_hits = quiet = {}  # type: ignore[var-annotated]

        def on_match(idx: int, _from: int, to: int, _flags: int, _ctx: object) -> None:
            key = keys[idx]
            if key in muted:
                got = quiet.get(key)
                if got is None:
                    quiet[key] = [a + to - 1]
                else:
                    got.append(a + to - 1)
                return
            if key == _STATE:
                floor[0] = min(floor[0], max(0, a + to - _STATE_REACH))
                return
            pos = a + to - 1
            if pos > line_end[0]:
                nl = find(b"\n", pos, end)
                nl = end if nl == -1 else nl
                cr = find(b"\r", pos, nl)
                line_end[0] = nl if cr == -1 else cr  # the logical line ends at its "\r" or "\n" (pyscan._bounds)
                seen.clear()
            elif key in seen:
                return
            seen.add(key)
            append((pos, key))

        try:
            db.scan(memoryview(buf)[a:end], match_event_handler=on_match)
        except hyperscan.error as e:
            # a Ctrl-C that lands in the match callback comes back as Hyperscan's own error: it is an interrupt
            if isinstance(e.__context__, KeyboardInterrupt) or isinstance(e.__cause__, KeyboardInterrupt):
                raise KeyboardInterrupt from None
            raise
        if self._floor == a:  # no state marker before this block: none before the first found in it, or its end
            self._floor = floor[0]
        return hits

    def settled_keys(self, roles: frozenset) -> tuple[frozenset, frozenset]:
        quiet = frozenset(i for i, p in enumerate(self.patterns) if p.role in roles and i not in self.plan.lazy)
        return quiet, quiet

    def state_keys(self, raw: bytes) -> set:
        return {i for i, ms in self._state_markers if any(m in raw for m in ms)}

    def _state_scan(self, buf: bytes, lo: int, hi: int) -> list[tuple[int, int]]:
        """(offset, pattern id) of the state matches that end in buf[lo:hi]."""
        got: list[tuple[int, int]] = []
        lo = max(lo, self._floor)  # the buffer holds no state marker before its floor
        if self._state_db is None or hi <= lo:
            return got
        start = max(0, lo - _STATE_REACH)  # a match that starts before lo and ends in the range
        keys = self._state_keys

        def on_match(idx: int, _from: int, to: int, _flags: int, _ctx: object) -> None:
            if start + to > lo:
                got.append((start + to - 1, keys[idx]))

        self._state_db.scan(memoryview(buf)[start:hi], match_event_handler=on_match)
        return got

    def state_before(self, buf: bytes, lo: int, hi: int) -> "Iterator[tuple[int, object]]":
        # backwards in growing blocks: only the last few state lines before a candidate are wanted
        block = 64 << 10
        lo = max(lo, self._floor)
        while hi > lo:
            b = max(lo, hi - block)
            yield from sorted(self._state_scan(buf, b, hi), reverse=True)
            hi, block = b, block * 4

    def state_after(self, buf: bytes, lo: int, hi: int) -> "Iterator[tuple[int, object]]":
        block = 64 << 10
        lo = max(lo, self._floor)
        while lo < hi:
            b = min(hi, lo + block)
            yield from sorted(self._state_scan(buf, lo, b))
            lo, block = b, block * 4

    def check(self, raw: bytes, head: bool, lits: set) -> "tuple[Pattern, ...] | bool":
        if _TAIL in lits and b"\x1b" not in raw and not (b"      " in raw and PADDED_B.search(raw)):
            lits = lits - {_TAIL}  # an anchor in a clean line: the patterns' own regexes decide
            if not lits:
                return False
        return super().check(raw, head, lits)

    def accept(self, raw: bytes, head: bool, lits: set) -> "tuple[Pattern, ...] | bool":  # type: ignore[override]
        plan = self.plan
        if (_HEAD if head else _TAIL) in lits:
            # as the pure-Python engine: found through a literal of the raw line, confirmed on the cleaned forms
            found = {m for m in (plan.head_literals if head else plan.tail_literals) if m in raw}
            ids = plan.ids_for(raw, head, found) if found else ()
        else:
            ids = plan.ids(raw, head, {k for k in lits if k >= 0})
        return tuple(self.patterns[i] for i in ids) if ids else False


def _has_dirt(db: "hyperscan.Database", buf: bytes, a: int, b: int) -> bool:
    """Does buf[a:b] hold a colour code or a progress bar's padding between two word characters (prefilter.PADDED_B)?
    One Hyperscan pass that stops at the first."""
    found = []

    def on_match(*_args: object) -> bool:
        found.append(True)
        return True  # (stop scanning)

    try:
        db.scan(memoryview(buf)[a:b], match_event_handler=on_match)
    except hyperscan.error:
        if not found:  # (stopping the scan reports as an error in some versions of the wheel)
            raise
    return bool(found)


def _escape(m: bytes) -> bytes:
    return b"".join(bytes([c]) if chr(c).isalnum() and c < 128 or c == 32 else b"\\x%02x" % c for c in m)
