"""The precise prefilter: which patterns can match a raw line, derived from PATTERNS themselves.

A line is a candidate when it contains one of a pattern's markers (every marker in the head of a log; past it, every
marker of a failure pattern, and for the others the markers that contain an ANCHOR: pyscan._plan) AND a loosened
form of that pattern's own regex matches its raw bytes. State patterns (phases) are not searched for candidates: the
reader looks for their lines around the candidates, through `state_literals`. The loosened regex is a superset of the pattern (anchors, lookarounds and backreferences dropped, `\\w`/`\\s` widened to non-ASCII
bytes, bounded repeats widened for multi-byte characters, nullable ends trimmed), so it never rejects a line the
pattern would accept, and it is plain enough for Hyperscan. The candidate carries the ids of the patterns that passed:
the parser tries those, in PATTERNS order, instead of all of them.

Both engines compute the same ids for the same line: the pure-Python engine finds marker/anchor literals with
bytes.find and tests the loosened regexes on those lines; Hyperscan finds the loosened regexes themselves, and the
same marker test and Python regex then confirm them. Lines with colour codes or a progress bar's padding inside
("segment          ation") are also tested in their cleaned forms, as the parser sees them.
"""
from __future__ import annotations

import hashlib
import marshal
import re
import re._constants as C  # noqa: PLC2701 - the stdlib parser is the only complete reader of Python regex syntax
import re._parser as sre  # noqa: PLC2701
import sys

from oomfix import cache
from oomfix import patterns as P

ANSI_B = re.compile(P.ANSI.pattern.encode())  # patterns.ANSI, on bytes
# events._PADDING on bytes, with non-ASCII bytes counted as word characters (a superset of str \w)
PADDED_B = re.compile(rb"[\w\x80-\xff] {6,}[\w\x80-\xff]")
_SQUEEZE_B = re.compile(rb"(?<=[\w\x80-\xff]) {6,}(?=[\w\x80-\xff])")
_HIGH = "\\x80-\\xff"


class _Unsupported(Exception):
    pass


def _lit(c: int, in_class: bool = False) -> str:
    if c < 128:
        ch = chr(c)
        if in_class:
            return "\\" + ch if ch in "\\]^-[" else (f"\\x{c:02x}" if not ch.isprintable() else ch)
        return re.escape(ch) if ch.isprintable() else f"\\x{c:02x}"
    raise _Unsupported  # callers widen non-ASCII


def _cat(cat: object, in_class: bool) -> str:
    name = str(cat)
    if name.endswith("NOT_DIGIT"):
        return "\\D"
    if name.endswith("DIGIT"):
        return "\\d"
    if name.endswith("NOT_SPACE"):
        return "\\S"
    if name.endswith("SPACE"):
        return "\\s" + _HIGH if in_class else "[\\s" + _HIGH + "]"
    if name.endswith("NOT_WORD"):
        return "\\W"
    if name.endswith("WORD"):
        return "\\w" + _HIGH if in_class else "[\\w" + _HIGH + "]"
    raise _Unsupported(name)


def _class(items: list, ignore: bool) -> str:
    neg = bool(items) and items[0][0] is C.NEGATE
    out = []
    for op, av in items[1:] if neg else items:
        if op is C.LITERAL:
            if av >= 128:
                if not neg:
                    out.append(_HIGH)
                continue
            out.append(_lit(av, True))
            if ignore and chr(av).isalpha():
                out.append(_lit(ord(chr(av).swapcase()), True))
        elif op is C.RANGE:
            lo, hi = av
            if lo >= 128:
                if not neg:
                    out.append(_HIGH)
                continue
            if hi >= 128:
                hi = 127
                if not neg:
                    out.append(_HIGH)
            out.append(f"\\x{lo:02x}-\\x{hi:02x}")
            if ignore:
                for a, b in ((65, 90), (97, 122)):
                    s, e = max(lo, a), min(hi, b)
                    if s <= e:
                        d = 32 if a == 65 else -32
                        out.append(f"\\x{s + d:02x}-\\x{e + d:02x}")
        elif op is C.CATEGORY:
            if neg and str(av).endswith(("_WORD", "_SPACE")) and "NOT" not in str(av):
                out.append("\\" + ("w" if str(av).endswith("WORD") else "s"))
            else:
                out.append(_cat(av, True))
        else:
            raise _Unsupported(str(op))
    if not out:
        return "[\\x00-\\xff]" if neg else "(?!)"
    return ("[^" if neg else "[") + "".join(out) + "]"


def _nullable(item: tuple) -> bool:
    op, av = item
    if op in (C.AT, C.ASSERT, C.ASSERT_NOT):
        return True
    if op in (C.MAX_REPEAT, C.MIN_REPEAT, C.POSSESSIVE_REPEAT):
        return av[0] == 0 or all(_nullable(i) for i in av[2])
    if op is C.SUBPATTERN:
        return all(_nullable(i) for i in av[3])
    if op is C.ATOMIC_GROUP:
        return all(_nullable(i) for i in av)
    if op is C.BRANCH:
        return any(all(_nullable(i) for i in b) for b in av[1])
    return False


def _boundary(item: tuple) -> bool:
    return item[0] is C.AT and str(item[1]).endswith("_BOUNDARY") and "NON" not in str(item[1])


def _trim(seq: list) -> list:
    """For an unanchored search, nullable leading and trailing items never decide whether a line matches (a word
    boundary does: kept)."""
    seq = list(seq)
    while seq and _nullable(seq[0]) and not _boundary(seq[0]):
        seq.pop(0)
    while seq and _nullable(seq[-1]) and not _boundary(seq[-1]):
        seq.pop()
    # "x+" at an end matches where "x" does: fewer match ends for Hyperscan to report
    for k in {0, len(seq) - 1} if seq else ():
        op, av = seq[k]
        if op in (C.MAX_REPEAT, C.MIN_REPEAT, C.POSSESSIVE_REPEAT) and av[0] >= 1:
            seq[k] = (C.MAX_REPEAT, (av[0], -1, av[2]))  # -1: exactly the minimum (see _emit)
    return seq


def _emit(seq: list, ignore: bool, groups: "dict[int, str] | None" = None) -> str:
    groups = {} if groups is None else groups
    out = []
    for op, av in seq:
        if op is C.LITERAL:
            if av >= 128:
                out.append("[" + _HIGH + "]+")  # one character, several bytes
            elif ignore and chr(av).isalpha():
                out.append(f"[{chr(av)}{chr(av).swapcase()}]")
            else:
                out.append(_lit(av))
        elif op is C.NOT_LITERAL:
            out.append("[^" + (_lit(av, True) if av < 128 else "\\n") + "\\n]")
        elif op is C.ANY:
            out.append(".")
        elif op is C.IN:
            out.append(_class(av, ignore))
        elif op is C.CATEGORY:
            out.append(_cat(av, False))
        elif op in (C.MAX_REPEAT, C.MIN_REPEAT, C.POSSESSIVE_REPEAT):
            lo, hi, body = av
            inner = _emit(body, ignore, groups)
            if not inner:
                continue
            if hi == -1:  # a trimmed end: at least `lo` bytes of the match are there when `lo` characters are
                out.append("(?:" + inner + "){%d}" % lo)
                continue
            # a multi-byte character counts once in str and up to four times in bytes
            hi_s = "" if hi == C.MAXREPEAT else str(hi * 4)
            q = "*" if (lo == 0 and not hi_s) else "+" if (lo == 1 and not hi_s) else "{%d,%s}" % (lo, hi_s)
            out.append("(?:" + inner + ")" + q)
        elif op is C.SUBPATTERN:
            group, add, _del, body = av
            inner = _emit(body, ignore or bool(add & re.IGNORECASE), groups)
            if group is not None:
                groups[group] = inner
            out.append("(?:" + inner + ")")
        elif op is C.ATOMIC_GROUP:
            out.append("(?:" + _emit(av, ignore, groups) + ")")
        elif op is C.BRANCH:
            out.append("(?:" + "|".join(_emit(b, ignore, groups) for b in av[1]) + ")")
        elif op is C.AT:
            name = str(av)
            if name.endswith("_BOUNDARY") and "NON" not in name:
                out.append("\\b")
            # ^ $ \A \Z \B: dropped (prefixes are stripped before the real regex runs, so a line start is anywhere)
        elif op in (C.ASSERT, C.ASSERT_NOT):
            continue  # lookarounds: dropped (a superset)
        elif op is C.GROUPREF:
            # a backreference matches what its group matched: anything its group can match is a superset
            out.append("(?:" + groups[av] + ")" if av in groups else "[^\\n]*")
        else:
            raise _Unsupported(str(op))
    return "".join(out)


def loosen(source: str, flags: int = 0) -> str | None:
    """A bytes regex that matches every line the pattern matches (and maybe more); None when no such regex can be
    derived (the pattern's markers alone then decide)."""
    try:
        seq = _trim(list(sre.parse(source, flags & ~re.ASCII)))
        ignore = bool(flags & re.IGNORECASE)
        # one group spanning everything, or an alternation at the top: trim inside
        while len(seq) == 1 and seq[0][0] is C.SUBPATTERN:
            ignore = ignore or bool(seq[0][1][1] & re.IGNORECASE)
            seq = _trim(list(seq[0][1][3]))
        if len(seq) == 1 and seq[0][0] is C.BRANCH:
            branches = [_trim(b) for b in seq[0][1][1]]
            if any(not b for b in branches):
                return None
            groups: dict[int, str] = {}
            out = "|".join(_emit(b, ignore, groups) for b in branches)
        else:
            if not seq:
                return None
            out = _emit(seq, ignore)
        re.compile(out.encode())
        return out if out else None
    except (_Unsupported, re.error, RecursionError, OverflowError):
        return None


def _with_level(loose: str, levels: str) -> str:
    """A pattern that counts only on a glog line of some severities (`Pattern.levels`): its loosened regex also
    requires such a header before its own match, as patterns.GLOG_ANY reads it: at the start of the record (after its
    prefixes) the severity letter, then a date and time or a space (the source file may be the pattern's own match);
    the match is in that record, so after its header. A glog W or I line of the same source file (a warning printed
    on every rank, every step) is then never a candidate, in either engine. (A header looked for after the match too
    cost Hyperscan a look to the line's end at every file name: a third of its time on lines full of them.)"""
    lv = "".join(c for c in levels if c.isalpha())
    head = f"[{lv}](?:\\d{{3,4}} \\d\\d:\\d\\d:\\d\\d| )"
    return f"{head}[^\\r\\n]*(?:{loose})"


def _source(p: P.Pattern) -> tuple[str, int]:
    rx = p.regex
    if isinstance(rx, re.Pattern):
        return rx.pattern, rx.flags
    # a user pattern (the `regex` module, run with a timeout): not loosened into an untimed `re` regex, its markers
    # alone decide
    return "", 0


def _digit_sensitive(source: str) -> bool:
    """Does the regex name a specific digit (outside a {m,n} quantifier: "to 0", "reducing to 1")? Then lines that
    differ only in such digits may parse differently, and a parse result cannot be shared by a template (a line with
    its digits masked)."""
    return re.search(r"(?<![\\{,])[0-9]", re.sub(r"\{\d*,?\d*\}|\\x[0-9a-fA-F]{2}|\\\d", "", source)) is not None


class _Compiled:
    """The loosened regexes, compiled when first used (most are never needed for a given log)."""

    def __init__(self, sources: list[str | None]) -> None:
        self._sources = sources
        self._rx: list[re.Pattern[bytes] | None] = [None] * len(sources)

    def __getitem__(self, i: int) -> re.Pattern[bytes] | None:
        rx = self._rx[i]
        if rx is None and self._sources[i]:
            rx = self._rx[i] = re.compile(self._sources[i].encode())  # type: ignore[union-attr]
        return rx


def _key(patterns: tuple[P.Pattern, ...], anchors: tuple[bytes, ...], everywhere: frozenset[int],
         lazy: frozenset[int]) -> str:
    h = hashlib.sha256()
    with open(__file__, "rb") as f:
        h.update(f.read())
    h.update(repr((sys.version_info[:2], anchors, sorted(everywhere), sorted(lazy))).encode())
    for p in patterns:
        rx = p.regex
        h.update(repr((p.name, p.markers, p.role, p.levels, type(rx).__module__, getattr(rx, "pattern", None),
                       getattr(rx, "flags", None))).encode())
    return h.hexdigest()[:32]


def _load(key: str) -> dict[str, object] | None:
    raw = cache.load(f"plan-{key}.marshal")
    try:
        data = marshal.loads(raw) if raw is not None else None
    except (EOFError, ValueError, TypeError):
        return None
    return data if isinstance(data, dict) and data.get("_key") == key else None


def _store(key: str, data: dict[str, object]) -> None:
    try:
        cache.store(f"plan-{key}.marshal", marshal.dumps({**data, "_key": key}))
    except ValueError:  # not marshallable: nothing cached
        pass


def _minimal(literals: tuple[bytes, ...]) -> tuple[bytes, ...]:
    """A literal that contains another one is found through it (its markers are tested on the line): one pass less."""
    return tuple(x for x in literals if not any(o != x and o in x for o in literals))


class Plan:
    """The prefilter derived from a pattern tuple: what each engine searches and how a raw line gets its ids."""

    def __init__(self, patterns: tuple[P.Pattern, ...], anchors: tuple[bytes, ...], everywhere: frozenset[int],
                 lazy: frozenset[int] = frozenset()) -> None:
        self.patterns = patterns
        self.lazy = lazy  # state patterns: their lines are handed on only as the state around a failure (reader.scan)
        # deriving the tables takes longer than diagnosing a small log: they are cached per user, keyed by everything
        # they are derived from (this module's code included)
        key = _key(patterns, anchors, everywhere, lazy)
        data = _load(key)
        if data is None:
            data = self._derive(patterns, anchors, everywhere, lazy)
            _store(key, data)
        self.__dict__.update(data)
        self.prx = _Compiled(self.loose)

    @classmethod
    def _derive(cls, patterns: tuple[P.Pattern, ...], anchors: tuple[bytes, ...], everywhere: frozenset[int],
                lazy: frozenset[int]) -> dict[str, object]:
        self = cls.__new__(cls)
        n = len(patterns)
        self.loose: list[str | None] = []
        for p in patterns:
            src, fl = _source(p)
            lo = loosen(src, fl) if src else None
            self.loose.append(_with_level(lo, p.levels) if lo and p.levels else lo)
        # past the head, a pattern counts through its markers that contain an anchor ("everywhere" ones and state
        # patterns: all markers)
        self.head_markers: list[tuple[bytes, ...]] = [tuple(p.markers) for p in patterns]
        self.tail_markers: list[tuple[bytes, ...]] = [
            tuple(m for m in p.markers if i in everywhere or i in lazy or any(a in m for a in anchors))
            for i, p in enumerate(patterns)]
        # what the engines search for candidates: every marker but the state patterns' own, and past the head the
        # anchors and the markers of the "everywhere" patterns
        self.anchors = tuple(sorted(set(anchors) | {m for i in everywhere if i not in lazy for m in patterns[i].markers}))
        self.head_literals = tuple(sorted({m for i, ms in enumerate(self.head_markers) if i not in lazy for m in ms} |
                                          set(self.anchors)))
        self.tail_literals = _minimal(self.anchors)
        # what the reader searches for state lines, around the candidates (reader.scan)
        self.state_literals = _minimal(tuple(sorted({m for i in lazy for m in patterns[i].markers})))
        # literal -> the patterns one of whose (scoped) markers contains it
        self.head_lit_pats = {lit: tuple(i for i in range(n) if any(lit in m for m in self.head_markers[i]))
                              for lit in self.head_literals + self.state_literals}
        self.tail_lit_pats = {lit: tuple(i for i in range(n) if any(lit in m for m in self.tail_markers[i]))
                              for lit in self.tail_literals + self.state_literals}
        self.all_ids = tuple(range(n))
        # literal -> one alternation of its patterns' loosened regexes: an ordinary line that merely holds a marker
        # word is rejected by one search (None: a pattern without a loosened regex, its markers alone decide)
        self.head_lit_markers = self._lit_markers(self.head_literals + self.state_literals, self.head_markers)
        self.tail_lit_markers = self._lit_markers(self.tail_literals + self.state_literals, self.tail_markers)
        self.digit_sensitive = frozenset(i for i, p in enumerate(patterns) if _digit_sensitive(_source(p)[0]) or
                                         any(re.search(rb"[0-9]", m) for m in p.markers))
        self.digit_markers = tuple(sorted({m for i in self.digit_sensitive for m in patterns[i].markers}))
        self._lit_sensitive = {(head, lit): any(i in self.digit_sensitive for i in table[lit])
                               for head, table in ((True, self.head_lit_pats), (False, self.tail_lit_pats))
                               for lit in table}
        return dict(self.__dict__)

    @staticmethod
    def _lit_markers(literals: tuple[bytes, ...], markers: list[tuple[bytes, ...]]) -> dict[bytes, list]:
        """literal -> [(scoped marker containing it, the patterns with that marker)]: a scoped marker in a line
        always contains a literal the engine finds there, so these are all the markers worth testing."""
        by_marker: dict[bytes, list[int]] = {}
        for i, ms in enumerate(markers):
            for m in ms:
                by_marker.setdefault(m, []).append(i)
        return {lit: [(m, tuple(ids)) for m, ids in by_marker.items() if lit in m] for lit in literals}

    def ids_for(self, line: bytes, head: bool, lits: "set[bytes]") -> tuple[int, ...]:
        """`ids` for a line in which the literals `lits` were found."""
        vs = self.variants(line)
        lits_all, table = (self.head_literals + self.state_literals, self.head_lit_markers) if head else \
            (self.tail_literals + self.state_literals, self.tail_lit_markers)
        if len(vs) > 1:
            lits = set(lits) | {lit for v in vs[1:] for lit in lits_all if lit in v}
        hinted: set[int] = set()
        for lit in lits:
            for m, ids in table.get(lit, ()):
                for v in vs:
                    if m in v:
                        hinted.update(ids)
                        break
        return self.ids(line, head, hinted) if hinted else ()

    def digit_matters(self, hints: "set", head: bool) -> bool:
        """Can a line's digits change which patterns it gets, given what the engine found in it (literals, or
        pattern ids; a negative id: a line that is checked on its cleaned forms)?"""
        for h in hints:
            if isinstance(h, bytes):
                if self._lit_sensitive.get((head, h), True):
                    return True
            elif h in self.digit_sensitive:  # (-1, -2, a line checked on its cleaned forms: see digits_in_variants)
                return True
        return False

    def digits_in_variants(self, line: bytes) -> bool:
        """Can a line's digits change which patterns it gets through its cleaned forms? Only if a pattern that names
        a digit has a marker in one of them (`ids` requires one)."""
        return any(m in v for v in self.variants(line) for m in self.digit_markers)

    def variants(self, line: bytes) -> list[bytes]:
        """The raw line and the forms the parser also tries: colour codes removed, progress-bar padding squeezed."""
        out = [line]
        if b"\x1b" in line:
            line = ANSI_B.sub(b"", line)
            out.append(line)
        if b"      " in line and PADDED_B.search(line):
            out.append(_SQUEEZE_B.sub(b"", line))
        return out

    def ids(self, line: bytes, head: bool, hinted: "set[int] | tuple[int, ...] | None" = None) -> tuple[int, ...]:
        """The patterns whose scoped marker is in the line (or a cleaned form of it) and whose loosened regex matches
        there. `hinted`: patterns that may match (the rest cannot); None: any."""
        markers = self.head_markers if head else self.tail_markers
        vs = self.variants(line)
        if len(vs) > 1 and hinted is not None:
            # a cleaned form can hold a literal the raw line does not
            lits, table = (self.head_literals + self.state_literals, self.head_lit_pats) if head else \
                (self.tail_literals + self.state_literals, self.tail_lit_pats)
            hinted = set(hinted)
            for v in vs[1:]:
                for lit in lits:
                    if lit in v:
                        hinted.update(table[lit])
        out = []
        for i in (sorted(hinted) if hinted is not None else self.all_ids):
            ms = markers[i]
            rx = self.prx[i]
            for v in vs:
                if any(m in v for m in ms) and (rx is None or rx.search(v)):
                    out.append(i)
                    break
        return tuple(out)

