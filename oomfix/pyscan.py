"""The pure-Python engine of the reader's prefilter, and what both engines share.

`Prefilter` finds the candidate lines of a buffer by searching its templates (its lines with their digits masked) with
`bytes.find`, once per template, for every literal (`find`, `_templates`; in blocks of lines that differ by words, the
anchors, and the other literals in a WINDOW above each line that ends a failure and at the end of the log) and decides,
once per template, whether a line is a candidate and which patterns it can match (`check`, from oomfix.prefilter's
Plan). `fastscan.HyperscanPrefilter` is the same class with Hyperscan finding the lines. `reader.scan` drives either
over a log's buffers.
"""
from __future__ import annotations

import bisect
import dataclasses
import functools
import itertools
import os
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING

from oomfix import patterns as _P
from oomfix.patterns import ANCHORS, FOLLOW, HEAD_BYTES, PATTERNS, Pattern

if TYPE_CHECKING:
    from oomfix.prefilter import Plan

MAX_LINE = 16 << 10  # a candidate line is cut to this many bytes around its marker
BLOCK = 1 << 20  # the pure-Python engine's templates are taken per block of about this many bytes (Prefilter.find)
KNOWN_BYTES = 8 << 20  # the templates it keeps, at most (the cache is emptied past this)
WINDOW = 1 << 20  # the pure-Python engine's full search above the end of a failure (Prefilter.find)


class Prefilter:
    """Finds the candidate lines: lines with a marker of a pattern (every marker in the head of a log; past it, every
    marker of a failure pattern and the ANCHORS, see `_plan`) whose loosened regex also matches (oomfix.prefilter),
    so that ordinary lines that merely contain a marker word ("indexing errors", "see_memory_usage") never reach the
    parser; and, around them, the state lines (`state_before`, `state_after`).

    This class is the pure-Python engine: one bytes.find pass per literal over the templates a log's blocks have not
    shown before (`find`); where those are too many (lines that differ by words), the anchors, and the other literals
    only in a WINDOW above each line that ends a failure and at the end of the log. `fastscan.HyperscanPrefilter` finds
    every pattern everywhere in one pass. Both confirm lines the same way, so they give the same candidates wherever
    the pure-Python engine searches every literal (tests/test_pyscan.py), on every fixture and corpus log, and for a
    failure's cause above its end.
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
        # Where a block's templates are too many to search for every literal (a bytes.find pass per literal, over a
        # hundred, over a block costs 25 x grep), the anchors are searched in them; the other literals only in a
        # WINDOW above each line that ends a failure (a death, an exception, the agent's signal, the summary table)
        # and at the end of the log, where a failure's cause is.
        plan = self.plan
        self.window = WINDOW
        self.always = tuple(m for m in self.anchors if m in ANCHORS)
        self.rest = tuple(m for m in self.anchors if m not in ANCHORS)
        # In the head: the anchors and the markers of the patterns that count only in the head (run parameters), the
        # other literals in the windows.
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
        # (find) the templates seen, per head flag: their literal hits, or None (no candidate), and their state
        # literals' hits; the literals searched in new templates (every one, or the anchors and head-only markers:
        # those that name no digit) and those searched in the block itself (that name one), per head flag
        self._known: tuple[dict[bytes, object], dict[bytes, object]] = ({}, {})
        self._state_of: tuple[dict[bytes, frozenset], dict[bytes, frozenset]] = ({}, {})  # the state literals in them
        self._known_bytes = 0
        self._state_set = frozenset(self.state_literals)
        # per buffer (id): the state literals the last `find` saw in each block, for state_before/state_after
        self._states: dict[int, _States] = {}
        self._template_lits = tuple(tuple(tuple(m for m in lits if not _DIGIT.search(m)) for lits in pair)
                                    for pair in ((self.anchors, self.always), (self.head_find, self.head_always)))
        self._digit_lits = tuple(tuple(m for m in lits if _DIGIT.search(m)) for lits in (self.anchors, self.head_find))
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
        """(offset, literal) of the literal hits of the candidate lines in buf[:end] (`find_blocks`, joined)."""
        return [h for block in self.find_blocks(buf, end, base, size, last) for h in block]

    def find_blocks(self, buf: bytes, end: int, base: int = 0, size: int | None = None,
                    last: bool = True) -> Iterator[list[tuple[int, bytes]]]:
        """The literal hits of the candidate lines in buf[:end], in line-aligned blocks of about BLOCK bytes, in
        order: every literal (the head's in the head), found once per template (`_templates`); in a block of mostly
        new templates (lines that differ by more than their digits), the anchors and the head-only markers, and every
        other literal in the windows above the lines that end a failure and at the end of the log (`last`: the buffer
        ends the log); such a block and those after it are handed over together, with their window hits.
        buf[end:size] is read ahead for the lines whose windows reach back before `end`. (Block by block, the hits
        held at once stay bounded: a million short error lines in one buffer.)"""
        head_end = min(end, max(0, HEAD_BYTES - base))
        size = max(end, size or end)
        states = _States(0, [])  # the state literals in each block's lines, as far as searched (state_before)
        if len(self._states) >= 8:
            self._states.clear()
        self._states[id(buf)] = states
        held: list[tuple[int, bytes]] = []  # the hits from the first block searched for the anchors alone on
        partial: list[tuple[int, int, bool]] = []  # those blocks
        # (a line longer than a buffer is cut at `end`: a literal across the cut is found with the bytes read ahead)
        stop = end if end == size or buf[end - 1] in b"\r\n" else min(size, end + self.longest)
        lo = 0
        while lo < stop:
            # ~1 MB blocks of whole lines; the head's last block ends with the line that holds the head's last byte
            hi = min(stop, lo + BLOCK, head_end) if lo < head_end else min(stop, lo + BLOCK)
            nl = buf.find(b"\n", hi - 1, stop) if hi < stop else -1
            hi = stop if nl == -1 else nl + 1
            head = base + lo < HEAD_BYTES
            hits: list[tuple[int, bytes]] = []
            if not self._templates(buf, lo, hi, head, hits, states.blocks):
                partial.append((lo, min(hi, end), head))
            if hi > end:
                hits = [h for h in hits if h[0] < end]
            states.end = min(hi, end)
            lo = hi
            if partial:
                held += hits
            elif hits:
                yield hits
        if partial:
            ahead = held
            if size > end:
                lits = self.head_always if base + end < HEAD_BYTES else self.always
                ahead = held + self._find_candidates(buf, end, size, lits, base, size)
            for a, b in self._windows(buf, ahead, 0, end, size, last):
                for plo, phi, head in partial:
                    if plo < b and a < phi:
                        held += self._find(buf, max(a, plo), min(b, phi), self.head_rest if head else self.rest)
            yield held

    def _templates(self, buf: bytes, lo: int, hi: int, head: bool, hits: list[tuple[int, bytes]],
                   states: list[tuple[int, int, frozenset]]) -> bool:
        """Add to `hits` the literal hits of the candidate lines of buf[lo:hi] (whole lines), found once per template:
        a log repeats a few dozen line kinds that differ by their digits, so the block's distinct templates (digits
        masked, C speed: translate, split, set) are searched instead of the block, and a template's verdict is kept.
        Returns False when the new templates were too many to search for every literal (lines that differ by words:
        generated text, hashes): then only the anchors (and the head-only markers) were searched, in them, and nothing
        is kept. `states` gets the block's range and the state literals its lines hold (all of them when False), for
        state_before and state_after."""
        # the literals that name a digit ("reducing to 0") are searched in the block itself: its templates hold a
        # "1" for every digit
        if self._digit_lits[head]:
            hits += self._find(buf, lo, hi, self._digit_lits[head])
        block = bytes(buf[lo:hi].translate(_TEMPLATE))  # (the same length: offsets carry over)
        lines = block.split(b"\n")
        known = self._known[head]
        uniq = set(lines)
        new = uniq.difference(known)
        full = True
        pending: dict[bytes, tuple[tuple[int, bytes], ...]] = {}
        state_of = self._state_of[head]
        marks = {u: v for u in uniq if (v := state_of.get(u))}  # the templates of state lines: their state literals
        if new:
            order = list(new)
            blob = b"\n".join(order)
            everything, anchors = self._template_lits[head]
            # one pass per literal over the new templates; when they are many, the anchors only (a pass over them
            # for every literal would cost more than the anchors over the whole block, issue 16)
            full = len(blob) * len(everything) <= (hi - lo) * len(anchors)
            starts = list(itertools.accumulate((len(u) + 1 for u in order[:-1]), initial=0))
            found: dict[int, dict[bytes, int]] = {}
            find = blob.find
            for lit in (everything + self.state_literals if full else anchors):
                i = find(lit)
                while i != -1:
                    j = bisect.bisect_right(starts, i) - 1
                    found.setdefault(j, {}).setdefault(lit, i - starts[j])
                    i = find(lit, starts[j] + len(order[j]) + 1)  # (the first hit in each template)
            state = self._state_set
            for j, u in enumerate(order):
                got = found.get(j)
                lits = () if got is None else tuple(sorted((off, lit) for lit, off in got.items() if lit not in state))
                sts = frozenset(lit for lit in got if lit in state) if got and full else frozenset()
                if sts:
                    marks[u] = sts
                if lits:
                    pending[u] = lits
                elif full:
                    self._keep(head, u, None, sts)
        states.append((lo, hi, frozenset().union(*marks.values()) if full else self._state_set))
        emit = {u: v for u in uniq if (v := known.get(u))}
        emit.update(pending)
        if not emit:
            return full
        pos = lo
        for line in lines:
            got = emit.get(line)
            if got is not None:
                if line in pending:
                    del pending[line]  # (the template's verdict, from its first line)
                    got = emit[line] = self._verdict(buf, pos, line, got, head, full, marks.get(line)) or ()
                if type(got) is _ByDigits:
                    raw = buf[pos:pos + len(line)]
                    forms = self.plan.variants(raw) if got.dirty else (raw,)
                    matched = False
                    for rx in got.rxs:
                        for form in forms:
                            if rx.search(form):
                                matched = True
                                break
                        if matched:
                            break
                    got = got.hits if matched else ()
                for off, lit in got:  # type: ignore[union-attr]
                    hits.append((pos + off, lit))
            pos += len(line) + 1
        return full

    def _verdict(self, buf: bytes, start: int, line: bytes, got: tuple[tuple[int, bytes], ...], head: bool,
                 keep_it: bool = True,
                 marks: frozenset | None = None) -> "tuple[tuple[int, bytes], ...] | _ByDigits | None":
        """What to do with the lines of a template (its first line at buf[start:], its literal hits `got`; kept in
        `_known` with its state literals `marks`, if `keep_it`): hand each on (`got`: a candidate, or one whose
        verdict check does not keep), none (None), or those whose digits make a pattern that names one match
        (`_ByDigits`: DeepSpeed's "OVERFLOW! ... reducing to N" on every step is a candidate only when the scale
        reaches 1)."""
        off, lit = got[0]
        raw = _cut(buf, start, start + len(line), start + off)
        pats = self.check(raw, head, {lit})
        keep = bool(pats) and not all(id(p) in self.lazy_pats for p in pats)  # type: ignore[union-attr]
        if len(line) > MAX_LINE:
            return got
        if any(m in raw for m in self._digit_stems[head]):
            # (a line with a stem of a literal that names a digit, "reducing to ": check keeps its verdict by its
            # literals; the lines that hold the literal itself are found apart, _templates)
            if any(m in raw for m in self._digit_lits[head]):
                return got  # (not kept: the template's verdict waits for a line without the literal)
            verdict = self._verdicts.get((head, frozenset(self._line_lits(raw, head)), line))
        else:
            verdict = self._shapes[head].get(line)
        if verdict is not _SENSITIVE:
            entry: "tuple[tuple[int, bytes], ...] | _ByDigits | None" = got if keep else None
        else:
            # the patterns that name no digit give the template's verdict; a line is read when one that names a digit
            # matches it (or a cleaned form of it: colour codes and padding are where the template has them, so the
            # literals of its cleaned forms are the template's too)
            plan = self.plan
            table = plan.head_lit_pats if head else plan.tail_lit_pats
            forms = plan.variants(raw)
            hinted = {i for m in self._line_lits_of[head] if any(m in v for v in forms) for i in table.get(m, ())}
            digit = hinted & plan.digit_sensitive
            fixed = _below_error(tuple(self.patterns[i] for i in plan.ids(raw, head, hinted - digit)) or False, raw)
            rxs = tuple(plan.prx[i] for i in sorted(digit))
            if (fixed and not all(id(p) in self.lazy_pats for p in fixed)) or \
                    any(rx is None for rx in rxs):  # type: ignore[union-attr]
                entry = got
            else:
                entry = _ByDigits(got, rxs, len(forms) > 1)
        if keep_it:
            self._keep(head, line, entry, marks)
        return entry

    def _keep(self, head: bool, template: bytes, got: "tuple[tuple[int, bytes], ...] | _ByDigits | None",
              marks: frozenset | None = None) -> None:
        """Note a template's literal hits (None: its lines are no candidates) and its state literals (`marks`), within
        a memory bound."""
        if len(template) > MAX_LINE:
            return
        self._known_bytes += len(template)
        if self._known_bytes > KNOWN_BYTES:
            for kept in self._known + self._state_of:
                kept.clear()
            self._known_bytes = len(template)
        self._known[head][template] = got
        if marks:
            self._state_of[head][template] = marks

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

    def _state_lits(self, buf: bytes, lo: int, hi: int) -> tuple[bytes, ...]:
        """The state literals worth searching for in buf[lo:hi]: those `find` saw in the templates of its blocks (a
        log with no checkpoint save costs no pass over it)."""
        got = self._states.get(id(buf))
        if got is None or hi > got.end:
            return self.state_literals
        present: set[bytes] = set()
        for a, b, lits in got.blocks:
            if a < hi and lo < b:
                present |= lits
        return tuple(lit for lit in self.state_literals if lit in present)

    def state_before(self, buf: bytes, lo: int, hi: int) -> Iterator[tuple[int, object]]:
        """(offset, key) of the state markers in buf[lo:hi], last first."""
        at = {lit: buf.rfind(lit, lo, hi) for lit in self._state_lits(buf, lo, hi)}
        while at:
            lit, pos = max(at.items(), key=_second)
            if pos == -1:
                return
            yield pos, lit
            at[lit] = buf.rfind(lit, lo, pos + len(lit) - 1)

    def state_after(self, buf: bytes, lo: int, hi: int) -> Iterator[tuple[int, object]]:
        """(offset, key) of the state markers in buf[lo:hi], first first."""
        at = {lit: buf.find(lit, lo, hi) for lit in self._state_lits(buf, lo, hi)}
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


@dataclasses.dataclass(slots=True)
class _States:
    """(Prefilter.find_blocks) The state literals in a buffer's lines: (start, stop, literals) per block of buf[:end]
    searched so far (the reader asks between blocks)."""
    end: int
    blocks: list[tuple[int, int, frozenset]]


@dataclasses.dataclass(frozen=True, slots=True)
class _ByDigits:
    """(Prefilter._verdict) A template whose lines are read when one of these regexes (patterns that name a digit)
    matches them; their literal hits."""
    hits: tuple[tuple[int, bytes], ...]
    rxs: tuple
    dirty: bool  # (its lines hold colour codes or padding: the regexes run on their cleaned forms too)


def _second(item: tuple) -> int:
    return item[1]


# a line's digits masked (its template), for the patterns that name no digit (prefilter._digit_sensitive): "0" is masked
# too, or every time stamp and step count with zeros in new places made a new template
_ONES = bytes.maketrans(b"0123456789", b"1111111111")
_DIGIT = re.compile(rb"[0-9]")
# the same for a block of lines, whose "\r" end lines too (pyscan._bounds): split on "\n", a block gives its templates
_TEMPLATE = bytes.maketrans(b"0123456789\r", b"1111111111\n")


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
