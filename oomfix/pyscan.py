"""The pure-Python engine of the reader's prefilter, and what both engines share.

`Prefilter` finds the candidate lines of a buffer with `bytes.find` (the anchors everywhere and, in the head, the
markers of the patterns that count only there; every other literal in a WINDOW above each line that ends a failure and
at the end of the log) and decides, once per template, whether a line is a candidate and which patterns it can match
(`check`, from oomfix.prefilter's Plan). `fastscan.HyperscanPrefilter` is the same class with Hyperscan finding the
lines. `reader.scan` drives either over a log's buffers.
"""
from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING

from oomfix import patterns as _P
from oomfix.patterns import ANCHORS, FOLLOW, HEAD_BYTES, PATTERNS, Pattern

if TYPE_CHECKING:
    from oomfix.prefilter import Plan

MAX_LINE = 16 << 10  # a candidate line is cut to this many bytes around its marker
WINDOW = 1 << 20  # the pure-Python engine's full search above the end of a failure (Prefilter.find)


class Prefilter:
    """Finds the candidate lines: lines with a marker of a pattern (every marker in the head of a log; past it, every
    marker of a failure pattern and the ANCHORS, see `_plan`) whose loosened regex also matches (oomfix.prefilter),
    so that ordinary lines that merely contain a marker word ("indexing errors", "see_memory_usage") never reach the
    parser; and, around them, the state lines (`state_before`, `state_after`).

    This class is the pure-Python engine: one bytes.find pass per literal, so past the head it searches the anchors
    everywhere and the other literals only in a WINDOW above each line that ends a failure and at the end of the log
    (`find`). `fastscan.HyperscanPrefilter` finds every pattern everywhere in one pass. Both confirm lines the same
    way, so they give the same candidates wherever the pure-Python engine searches: on every fixture and corpus log,
    and for a failure's cause above its end.
    """

    name = "python"

    def __init__(self, patterns: tuple[Pattern, ...] | None = None, extra: tuple[Pattern, ...] = ()) -> None:
        self.patterns = tuple(extra) + (PATTERNS if patterns is None else tuple(patterns))
        self.plan = _plan(self.patterns, len(extra))
        self.markers = self.plan.head_literals
        # a literal that contains another is found through it (Plan._lit_markers maps each literal to every marker
        # containing it): one bytes.find pass less over the head for each
        from oomfix.prefilter import _minimal
        self.head_find = _minimal(self.markers)
        self.anchors = self.plan.tail_literals
        self.longest = max(len(m) for m in self.markers)
        self._verdicts: dict[tuple, object] = {}
        # keys whose hits the reader takes in bulk (scan: settled lines): an engine that reports hits block by block
        # hands their positions over in muted_hits instead of one hit each; this one reports them all
        self.muted: set = set()
        self.muted_hits: dict = {}  # the muted keys' hit positions in the block last reported, per key
        self.state_literals = self.plan.state_literals
        self.dirt_only: set = set()  # the keys of a hit that counts only on a line with colour codes or padding
        self.lazy_pats = frozenset(id(self.patterns[i]) for i in self.plan.lazy)
        # one C-level test: does a line hold a state marker at all (then `state_keys` says which)
        self.state_rx = re.compile(b"|".join(re.escape(m) for m in self.state_literals) or b"(?!)")
        # Past the head, one bytes.find pass per literal (over a hundred) would cost 25 x grep. The anchors are
        # searched everywhere; the other literals only in a WINDOW above each line that ends a failure (a death, an
        # exception, the agent's signal, the summary table) and at the end of the log, where a failure's cause is.
        plan = self.plan
        self.window = WINDOW
        self.always = tuple(m for m in self.anchors if m in ANCHORS)
        self.rest = tuple(m for m in self.anchors if m not in ANCHORS)
        # In the head too (a hundred and fifty passes over 4 MB cost more than the 16 MB after it, issue 16): the
        # anchors and the markers of the patterns that count only in the head (run parameters) are searched
        # everywhere, the other literals in the windows.
        failure = frozenset(i for i, p in enumerate(self.patterns) if i < len(extra) or p.role in _FAILURE_ROLES)
        head_only = {m for i, p in enumerate(self.patterns) if i not in failure and i not in plan.lazy
                     for m in p.markers}
        self.head_always = _minimal(tuple(sorted(set(self.always) | head_only)))
        self.head_rest = tuple(m for m in self.head_find if m not in self.head_always)
        # every literal of a line (tail, head), for lines found through one of them
        self._line_lits_of = (plan.tail_literals + plan.state_literals, plan.head_literals + plan.state_literals)
        self._shapes: tuple[dict[bytes, object], ...] = ({}, {})  # (check) a line's digits masked -> its verdict
        self._follow_shapes: dict[bytes, object] = {}  # (line_pats) the same for FOLLOW lines
        # the cache key masks digits: exact for a line that holds no literal naming a digit ("reducing to 0"), that
        # is none of their parts before the digit
        self._digit_stems = tuple(
            tuple(re.sub(rb"[0-9].*", b"", m, flags=re.S) for m in lits if re.search(rb"[0-9]", m))
            for lits in self._line_lits_of)
        self._ends = frozenset(m for m in self.always if any(
            self.patterns[i].role in _ENDS for i in plan.tail_lit_pats[m]))

    def with_patterns(self, patterns: tuple[Pattern, ...], n_user: int) -> "Prefilter":
        """The same engine for another pattern tuple (user patterns first)."""
        if patterns == self.patterns:
            return self
        return type(self)(patterns[n_user:], patterns[:n_user])

    def _find(self, buf: bytes, start: int, end: int, literals: tuple[bytes, ...]) -> list[tuple[int, bytes]]:
        """(offset, literal) of the first hit of each literal in each logical line of buf[start:end] (the reader
        reads a line once, whatever it holds: "exit" twice in every line of torch's process-group warning was two
        hits a line)."""
        hits = []
        find = buf.find
        for m in literals:
            i = find(m, start, end)
            while i != -1:
                hits.append((i, m))
                nl = find(b"\n", i, end)
                if nl == -1:
                    break
                cr = find(b"\r", i, nl)  # (a logical line ends at a "\r" too: pyscan._bounds)
                i = find(m, (nl if cr == -1 else cr) + 1, end)
        return hits

    def find(self, buf: bytes, end: int, base: int = 0, size: int | None = None,
             last: bool = True) -> list[tuple[int, bytes]]:
        """(offset, literal) of the literal hits in buf[:end]: the anchors everywhere and the head-only markers in
        the head; every other literal in the windows above the lines that end a failure and at the end of the log
        (`last`: the buffer ends the log). buf[end:size] is read ahead for such lines, whose windows reach back before
        `end`."""
        head_end = min(end, max(0, HEAD_BYTES - base))
        size = max(end, size or end)
        ahead: list[tuple[int, bytes]] = []
        if head_end > 0:
            ahead += self._find_candidates(buf, 0, min(size, head_end + self.longest), self.head_always, base, size)
        if head_end < size:
            ahead += self._find_candidates(buf, max(0, head_end - self.longest), size, self.always, base, size)
        hits = [h for h in ahead if h[0] < end]
        for a, b in self._windows(buf, ahead, 0, end, size, last):
            if a < head_end:
                hits += self._find(buf, a, min(b, head_end + self.longest), self.head_rest)
            if b > head_end:
                hits += self._find(buf, max(a, head_end - self.longest), b, self.rest)
        return hits

    def _find_candidates(self, buf: bytes, lo: int, hi: int, literals: tuple[bytes, ...], base: int,
                         size: int) -> list[tuple[int, bytes]]:
        """`_find`, keeping only the hits whose line is a candidate (check: one lookup per template after the
        first): a line kind that says "exit" or "errors" on every line is dropped here, once, rather than by the
        window search and the reader each. (This engine's check tests every literal of the line, whichever found
        it.)"""
        out = []
        find = buf.find
        lazy = self.lazy_pats
        check = self.check
        for m in literals:
            i = find(m, lo, hi)
            while i != -1:
                start, stop = _bounds(buf, i, size)
                pats = check(_cut(buf, start, stop, i), base + start < HEAD_BYTES, {m})
                if pats and not all(id(p) in lazy for p in pats):
                    out.append((i, m))
                i = find(m, stop + 1, hi) if stop < hi else -1
        return out

    def find_blocks(self, buf: bytes, end: int, base: int = 0, size: int | None = None,
                    last: bool = True) -> Iterator[list]:
        """`find`'s hits in line-aligned blocks of buf[:end], in order (a line never spans two blocks)."""
        yield self.find(buf, end, base, size, last)

    def _windows(self, buf: bytes, ahead: list[tuple[int, bytes]], lo: int, end: int, size: int,
                 last: bool) -> list[tuple[int, int]]:
        """The merged ranges of buf[lo:end] to search for every tail literal."""
        spans = []
        done = -1
        ends = self._ends
        for pos, lit in sorted(h for h in ahead if h[1] in ends):
            if pos <= done:
                continue
            start, stop = _bounds(buf, pos, size)
            done = stop
            pats = self.check(_cut(buf, start, stop, pos), False, {lit})
            if pats and any(p.role in _ENDS for p in pats):
                spans.append((max(lo, start - self.window), min(start, end)))
        if last:
            spans.append((max(lo, end - self.window), end))
        out: list[tuple[int, int]] = []
        for a, b in sorted(spans):
            if b <= a:
                continue
            if out and a <= out[-1][1]:
                out[-1] = (out[-1][0], max(out[-1][1], b))
            else:
                out.append((a, b))
        return out

    def _line_lits(self, raw: bytes, head: bool) -> set[bytes]:
        """Every literal of a line (head or tail ones): a line found through one anchor gets every pattern its
        other literals allow, as Hyperscan reports every pattern that matches."""
        return {m for m in self._line_lits_of[head] if m in raw}  # (check caches the verdict of a template)

    def line_pats(self, raw: bytes) -> "tuple[Pattern, ...]":
        """The patterns a line read without a hit (a FOLLOW line) can match, every marker counting as in the head;
        once per template unless a pattern that names a digit may match it."""
        plan = self.plan
        if any(m in raw for m in self._digit_stems[True]):  # (a marker that names a digit may be there)
            return tuple(self.patterns[i] for i in plan.ids(raw, True))
        shape = raw.translate(_ONES)
        got = self._follow_shapes.get(shape)
        if got is None:
            if len(self._follow_shapes) >= 8192:
                self._follow_shapes.clear()
            # (no literal with a digit in the line: whether a digit-naming pattern may match is the template's)
            got = self._follow_shapes[shape] = _SENSITIVE if plan.digits_in_variants(raw) else \
                tuple(self.patterns[i] for i in plan.ids(raw, True))
        if got is _SENSITIVE:
            return tuple(self.patterns[i] for i in plan.ids(raw, True))
        return got  # type: ignore[return-value]

    def settled_keys(self, roles: frozenset) -> tuple[frozenset, frozenset]:
        """The hit keys (here: literals) through which only one pattern, of one of these roles, can match a line: in
        the head, past it."""
        plan = self.plan
        return tuple(frozenset(lit for lit, ids in table.items() if len(ids) == 1 and lit not in self.state_literals
                               and self.patterns[ids[0]].role in roles and ids[0] not in plan.lazy)
                     for table in (plan.head_lit_pats, plan.tail_lit_pats))  # type: ignore[return-value]

    def state_keys(self, raw: bytes) -> set:
        """The keys (here: literals) through which a state search would find this line."""
        return {lit for lit in self.state_literals if lit in raw}

    def state_before(self, buf: bytes, lo: int, hi: int) -> Iterator[tuple[int, object]]:
        """(offset, key) of the state markers in buf[lo:hi], last first."""
        at = {lit: buf.rfind(lit, lo, hi) for lit in self.state_literals}
        while at:
            lit, pos = max(at.items(), key=_second)
            if pos == -1:
                return
            yield pos, lit
            at[lit] = buf.rfind(lit, lo, pos + len(lit) - 1)

    def state_after(self, buf: bytes, lo: int, hi: int) -> Iterator[tuple[int, object]]:
        """(offset, key) of the state markers in buf[lo:hi], first first."""
        at = {lit: buf.find(lit, lo, hi) for lit in self.state_literals}
        at = {lit: pos for lit, pos in at.items() if pos != -1}
        while at:
            lit, pos = min(at.items(), key=_second)
            yield pos, lit
            nxt = buf.find(lit, pos + 1, hi)
            if nxt == -1:
                del at[lit]
            else:
                at[lit] = nxt

    def check(self, raw: bytes, head: bool, lits: set) -> "tuple[Pattern, ...] | bool":
        """`accept`, once per template: a line like one checked before but for its digits (a per-step line) gets the
        same verdict, when no pattern that could match it names a digit."""
        if self.window:
            # this engine tests every literal of the line, whatever found it: the verdict is the template's (when
            # no literal names a digit), found in one lookup (a line kind that says "errors" on every line
            # reaches here a million times)
            if not any(m in raw for m in self._digit_stems[head]):
                shape = raw.translate(_ONES)
                got = self._shapes[head].get(shape)
                if got is None:
                    lits = self._line_lits(raw, head)
                    if len(self._shapes[head]) >= 8192:
                        self._shapes[head].clear()
                    got = self._shapes[head][shape] = _SENSITIVE if self._sensitive(raw, head, lits) else \
                        _below_error(self.accept(raw, head, lits), raw)
                if got is not _SENSITIVE:
                    return got
            lits = self._line_lits(raw, head)
        # (whether the digits matter depends on the literals and on the template: both are in the key)
        key = (head, frozenset(lits), raw.translate(_ONES))
        got = self._verdicts.get(key)
        if got is None:
            if len(self._verdicts) >= 8192:
                self._verdicts.clear()
            got = self._verdicts[key] = _SENSITIVE if self._sensitive(raw, head, lits) else \
                _below_error(self.accept(raw, head, lits), raw)
        if got is _SENSITIVE:
            return _below_error(self.accept(raw, head, lits), raw)
        return got

    def _sensitive(self, raw: bytes, head: bool, lits: set) -> bool:
        """Can the line's digits change its verdict (a pattern that names a digit may match it)?"""
        return self.plan.digit_matters(lits, head) or \
            ((b"\x1b" in raw or b"      " in raw) and self.plan.digits_in_variants(raw))

    def accept(self, raw: bytes, head: bool, lits: set[bytes]) -> "tuple[Pattern, ...] | bool":
        """The patterns (in PATTERNS order) a line found through `lits` can match; False: not a candidate."""
        plan = self.plan
        ids = plan.ids_for(raw, head, lits)
        return tuple(self.patterns[i] for i in ids) if ids else False


def _lookahead(source: str) -> str | None:
    """The leading negative lookahead of a regex source ("^(?!...)"), or None."""
    if not source.startswith("^(?!"):
        return None
    depth, k, in_class = 0, 1, False
    while k < len(source):
        c = source[k]
        if c == "\\":
            k += 2
            continue
        if in_class:
            in_class = c != "]"
        elif c == "[":
            in_class = True
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                return source[:k + 1]
        k += 1
    return None


@functools.lru_cache(maxsize=64)
def _gate(p: Pattern) -> "re.Pattern[str] | None":
    """For a pattern that refuses lines of a lower severity by a leading lookahead (error_level: "^(?!.*INFO...)"),
    that lookahead alone: the line is refused when it does not match."""
    src = getattr(p.regex, "pattern", None)
    head = _lookahead(src) if isinstance(src, str) else None
    return re.compile(head, p.regex.flags) if head else None


# What can make the text a pattern runs on differ from the raw line: records split out of it (two ranks' output,
# a flattened log, an exception or glog header after a blank), colour codes, a tqdm bar glued before it.
_SPLITTABLE = re.compile(rb"\[rank|\[default|Traceback|\x1b|it/s|s/it|\s(?:[A-Za-z_][\w.]*(?:Error|Exception): |"
                         rb"\[?[IWEF]\d{3,4} \d\d:)")


def _below_error(pats: "tuple[Pattern, ...] | bool", raw: bytes) -> "tuple[Pattern, ...] | bool":
    """Structure before words: a line whose only possible patterns refuse its severity (an INFO or WARNING line that
    says "error.json" or "indexing errors", printed every step) is no candidate, so it is dropped here rather than
    parsed. Only when the line cannot turn into other records (events.records) or lose words when cleaned: the
    lookahead then sees what the parser would see (the prefixes strip_prefixes removes hold no severity word)."""
    if not pats or len(raw) > 400:
        return pats
    gates = [_gate(p) for p in pats]
    if any(g is None for g in gates) or _SPLITTABLE.search(raw):
        return pats
    text = raw.decode("utf-8", "replace")
    return False if all(g.match(text) is None for g in gates) else pats  # type: ignore[union-attr]


_SENSITIVE = object()  # (Prefilter.check) a template whose verdict depends on its digits: not cached


def _second(item: tuple) -> int:
    return item[1]


# a line's digits masked (its template), for the patterns that name no digit (prefilter._digit_sensitive): "0" is masked
# too, or every time stamp and step count with zeros in new places made a new template
_ONES = bytes.maketrans(b"0123456789", b"1111111111")


# the lines that end a failure: the pure-Python engine searches every literal in a WINDOW above them
_ENDS = frozenset({_P.DEATH, _P.AGENT_SIGNAL, _P.CLOSING, _P.TABLE_SECTION, _P.EXCEPTION, _P.TRACEBACK})
# (a clean finish and a new launch decide the outcome as much as a failure does: found wherever they are too)
_FAILURE_ROLES = frozenset({_P.CAUSE, _P.WEAK, _P.EXCEPTION, _P.DEATH, _P.AGENT_SIGNAL, _P.CLOSING, _P.TABLE_SECTION,
                            _P.TRACEBACK, _P.ERROR_LEVEL, _P.FINISHED, _P.RUN_START})


@functools.lru_cache(maxsize=16)
def _plan(patterns: tuple[Pattern, ...], n_user: int) -> "Plan":
    from oomfix.prefilter import Plan

    # Past the head, a pattern that reports a failure counts through every one of its markers, like a user pattern:
    # a failure is found wherever it is in a multi-GB log. Only run-parameter patterns (the HF block, the OOM's
    # numbers) are limited to the head, to their anchors and to the lines after a FOLLOW trigger.
    failure = frozenset(i for i, p in enumerate(patterns) if i < n_user or p.role in _FAILURE_ROLES)
    # State lines (checkpoint saves, evaluation markers: thousands in a long run) matter only as the last state before
    # a failure and the first after it: the reader notes where they are and hands on only those (scan). A state
    # pattern that triggers FOLLOW lines (the HF block after "***** Running training") is read as it comes.
    lazy = frozenset(i for i, p in enumerate(patterns) if i >= n_user and p.role == _P.PHASE and
                     not any(trig in m for m in p.markers for trig, _n in FOLLOW))
    return Plan(patterns, ANCHORS, failure, lazy)


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


def _bounds(buf: bytes, hit: int, end: int) -> tuple[int, int]:
    """(start, stop) of the logical line around `hit`: between "\\r"/"\\n" boundaries."""
    ln = buf.rfind(b"\n", 0, hit)
    start = max(ln, buf.rfind(b"\r", ln + 1, hit)) + 1
    stop_n = buf.find(b"\n", hit, end)
    stop_r = buf.find(b"\r", hit, stop_n if stop_n != -1 else end)
    return start, stop_r if stop_r != -1 else (stop_n if stop_n != -1 else end)


def _cut(buf: bytes, start: int, stop: int, hit: int) -> bytes:
    """The line's bytes, at most MAX_LINE of them around the hit."""
    lo = start if stop - start <= MAX_LINE else max(start, hit - MAX_LINE // 2)
    return bytes(buf[lo:min(stop, lo + MAX_LINE)])
