"""Expansion: the words a shell word becomes, as far as the text tells.

`$NAME` and `${...}` with their operators (`:-`, `:=`, `:+`, `#`, `%`, `/`, substrings, case), arrays and
associative arrays, `$(...)` whose output the text determines (dirname, pwd, echo, basename, realpath, cd && pwd),
arithmetic on known numbers, word splitting of unquoted expansions. `$RANDOM` is unknown unless the script seeds it
with `RANDOM=n`: then bash's own generator gives fixed values, computed here. No globbing: a pattern is kept as
written. `Expander` is a mixin: the walker that inherits it runs the commands inside `$(...)`.
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING

from oomfix.shparse import Lexer, Node, ParseError, Simple, Word, WordPart, parse
from oomfix.shvalues import _NEVER, MAX_VALUE, Command, Ctx, Part, State, Value, _join, _merge, concat

UNSET = Value()  # a variable the script never set: its value comes from the environment


def bash_random(seed: int) -> tuple[int, int]:
    """bash >= 5.1's $RANDOM after `RANDOM=seed` (variables.c brand/intrand32: Park-Miller minimal standard, then the
    two 16-bit halves xored): (the value, the next seed). Older bash used another generator; 5.1 is in every current
    distribution."""
    last = seed & 0xFFFFFFFF or 123459876
    h, lo = divmod(last, 127773)
    t = 16807 * lo - 2836 * h
    nxt = t + 0x7FFFFFFF if t < 0 else t
    return ((nxt >> 16) ^ (nxt & 65535)) & 32767, nxt


def _unknown_ref(raw: str, random: bool = False) -> Value:
    return Value.unknown(raw, random)


class Expander:
    """The expansion methods of the walker (`Walker` inherits them)."""

    if TYPE_CHECKING:  # provided by the walker
        path: str
        depth: int
        out: list[Command]
        MAX_DEPTH: int

        def exec_node(self, node: Node | Simple, st: State, ctx: Ctx) -> None: ...

    def lookup(self, name: str, st: State) -> object:
        for scope in reversed(st.locals_stack):
            if name in scope:
                return scope[name]
        return st.vars.get(name, _NEVER)

    def assign(self, name: str, val: object, st: State, local: bool = False) -> None:
        if name == "RANDOM":
            text = getattr(val, "text", None)
            st.rand_seed = int(text) if isinstance(text, str) and text.strip().isdigit() else None
            return
        if local and st.locals_stack:
            st.locals_stack[-1][name] = val
            return
        for scope in reversed(st.locals_stack):
            if name in scope:
                scope[name] = val
                return
        st.vars[name] = val

    def param(self, raw: str, st: State, quoted: bool, ctx: Ctx) -> list[Value] | Value:
        """Expand one $NAME / ${...}; a list means several words ("$@", "${arr[@]}")."""
        if raw.startswith("${"):
            body = raw[2:-1]
        else:
            body = raw[1:]
        if body == "RANDOM":
            if st.rand_seed is not None:
                value, st.rand_seed = bash_random(st.rand_seed)
                return Value.lit(str(value))
            return _unknown_ref(raw, random=True)
        if body in ("PWD",):
            return Value.lit(st.cwd) if st.cwd else _unknown_ref(raw)
        if body in ("@", "*"):
            if st.positional is None:
                return _unknown_ref(raw)
            return list(st.positional) if body == "@" and quoted else concat(_join(st.positional))
        if body == "#":
            return Value.lit(str(len(st.positional))) if st.positional is not None else _unknown_ref(raw)
        if body.isdigit():
            n = int(body)
            if n == 0:
                zero = st.vars.get("0")
                return zero if isinstance(zero, Value) else Value.lit(self.path)
            if st.positional is None:
                return _unknown_ref(raw)
            return st.positional[n - 1] if n <= len(st.positional) else Value()
        m = re.match(r"([!#]?)([A-Za-z_][A-Za-z0-9_]*|[0-9]+|[@*])(\[([^\]]*)\])?(.*)$", body, re.S)
        if not m:
            return _unknown_ref(raw)
        flag, name, _, index, rest = m.groups()
        if name.isdigit() or name in ("@", "*"):
            if flag == "#" and name in ("@", "*"):
                return self.param("$#", st, quoted, ctx)
            base = self.param("$" + name, st, quoted, ctx)
            if isinstance(base, list):
                base = concat(_join(base))
            return self._op(base, rest, raw, st, ctx, name) if rest else base
        val = self.lookup(name, st)
        if name == "BASH_SOURCE" and index is None:
            index = "0"
        if flag == "!" and index in ("@", "*"):
            if isinstance(val, dict):
                keys = [Value.lit(k) for k in val]
                return keys if quoted and index == "@" else concat(_join(keys))
            return _unknown_ref(raw)
        if flag == "#":
            if index in ("@", "*"):
                return Value.lit(str(len(val))) if isinstance(val, (list, dict)) else _unknown_ref(raw)
            v = self._scalar(val, name, raw)
            return Value.lit(str(len(v.text))) if v.text is not None else _unknown_ref(raw)
        if index in ("@", "*"):
            if isinstance(val, list):
                items = list(val)
            elif isinstance(val, dict):
                items = list(val.values())
            elif isinstance(val, Value):
                items = [val]
            else:
                return _unknown_ref(raw)
            if any(not v.known for v in items) and isinstance(val, dict):
                return _unknown_ref(raw)
            return items if quoted and index == "@" else concat(_join(items))
        if index is not None:
            idx = Value.lit(self.expand_key(index, st, ctx))
            if isinstance(val, list) and idx.text is not None and idx.text.strip().lstrip("-").isdigit():
                i = int(idx.text)
                v = val[i] if -len(val) <= i < len(val) else Value()
            elif isinstance(val, dict) and idx.text is not None:
                v = val.get(idx.text.strip("\"'"), _unknown_ref(raw))
            elif val is _NEVER:
                v = UNSET
            else:
                v = _unknown_ref(raw)
        else:
            v = self._scalar(val, name, raw)
        if flag == "!":
            return _unknown_ref(raw)
        if rest:
            return self._op(v, rest, raw, st, ctx, name, unset=val is _NEVER)
        if val is _NEVER:
            return _unknown_ref(raw)  # from the environment
        if not v.known and v.alias is not None:
            return Value(v.parts, raw)  # a named unknown: shown as written here
        return v

    def _scalar(self, val: object, name: str, raw: str) -> Value:
        if isinstance(val, Value):
            return val
        if isinstance(val, list):
            return val[0] if val else Value()
        if isinstance(val, dict):
            return val.get("0", Value())
        return UNSET

    def _op(self, v: Value, rest: str, raw: str, st: State, ctx: Ctx, name: str,
            unset: bool = False) -> Value:
        m = re.match(r"(:?)([-=+?])(.*)$", rest, re.S)
        if m:
            # `${V:-d}` uses d when V is unset or empty, `${V-d}` only when unset. A variable the script never set
            # counts as unset: the script's own default is what normally applies.
            colon, op, arg = m.groups()
            null = unset or (bool(colon) and v.known and v.text == "")
            if op in ("-", "="):
                if null:
                    d = self.expand_str(arg, st, ctx)
                    if op == "=" and not name.isdigit():
                        self.assign(name, d, st)
                    return d
                return Value(v.parts, raw) if not v.known else v
            if op == "+":
                if null:
                    return Value()
                return self.expand_str(arg, st, ctx) if v.known else _unknown_ref(raw)
            return v if not null else _unknown_ref(raw)  # `${V:?message}`
        if v.text is None:
            return _unknown_ref(raw, v.random)
        s = v.text
        m = re.match(r"(##?|%%?)(.*)$", rest, re.S)
        if m:
            op, pat_raw = m.groups()
            pat = self.expand_str(pat_raw, st, ctx).text
            if pat is None or len(s) > 65536:
                return _unknown_ref(raw)  # (the prefix/suffix search is quadratic in the value's length)
            return Value.lit(_strip(s, op, pat))
        m = re.match(r"(//?|/#|/%)([^/]*)(?:/(.*))?$", rest, re.S)
        if m:
            op, pat_raw, rep_raw = m.groups()
            pat = self.expand_str(pat_raw, st, ctx).text
            rep = self.expand_str(rep_raw or "", st, ctx).text
            if pat is None or rep is None:
                return _unknown_ref(raw)
            rx = _glob_rx(pat)
            if op == "//":
                if rep and len(s) + len(rep) * sum(1 for _ in zip(range(MAX_VALUE), re.finditer(rx, s))) > MAX_VALUE:
                    return _unknown_ref(raw)  # the result would outgrow any real value: not built
                return Value.lit(re.sub(rx, lambda _: rep, s))
            if op == "/#":
                return Value.lit(re.sub("^(?:" + rx + ")", lambda _: rep, s, count=1))
            if op == "/%":
                return Value.lit(re.sub("(?:" + rx + ")$", lambda _: rep, s, count=1))
            return Value.lit(re.sub(rx, lambda _: rep, s, count=1))
        m = re.match(r":\s*(-?\d+)(?::\s*(-?\d+))?$", rest)
        if m:
            off = int(m.group(1))
            ln = int(m.group(2)) if m.group(2) is not None else None
            sub = s[off:] if ln is None else (s[off:off + ln] if ln >= 0 else s[off:ln])
            return Value.lit(sub)
        if rest in ("^^", ",,", "^", ","):
            return Value.lit(s.upper() if rest == "^^" else s.lower() if rest == ",," else
                             (s[:1].upper() + s[1:] if rest == "^" else s[:1].lower() + s[1:]))
        return _unknown_ref(raw)

    def expand_str(self, text: str, st: State, ctx: Ctx, quoted: bool = True) -> Value:
        """Expand a fragment of text as if double-quoted (operator arguments, array indices)."""
        if "$" not in text and "`" not in text and "\\" not in text and "'" not in text and '"' not in text:
            return Value.lit(text)
        try:
            w = Word(tuple(_dq_parts(text)), text, 0)
        except Exception:  # noqa: BLE001 - an odd fragment is unknown, not an error
            return _unknown_ref(text)
        return concat(_join(self.expand_word(w, st, ctx, split=False)))

    def expand_key(self, text: str, st: State, ctx: Ctx) -> str:
        """An array index or associative key, quotes removed."""
        try:
            return self.word_value(Word(Lexer(text)._word().parts, text, 0), st, ctx).show()
        except Exception:  # noqa: BLE001
            return text

    def expand_word(self, w: Word, st: State, ctx: Ctx, split: bool = True) -> list[Value]:
        """A word to the words it becomes: parameters, command substitution, arithmetic, splitting of unquoted
        expansions. No globbing: a pattern is kept as written."""
        fields: list[list[Part]] = [[]]
        has_quoted_empty = False
        started = False

        def add(v: Value, splittable: bool) -> None:
            nonlocal started
            started = True
            if not splittable or not split:
                fields[-1].extend(v._flat())
                return
            if v.alias is not None and not any(p.known and re.search(r"\s", p.text) for p in v.parts):
                fields[-1].extend(v._flat())
                return
            for p in v.parts:  # an unquoted expansion is split into words: the value's own parts count
                if not p.known:
                    fields[-1].append(p)
                    continue
                pieces = re.split(r"[ \t\n]+", p.text)
                for k, piece in enumerate(pieces):
                    if k > 0:
                        fields.append([])
                    if piece:
                        fields[-1].append(Part(piece))

        for part in w.parts:
            kind = part[0]
            if kind == "lit":
                if part[2] and part[1] == "":
                    has_quoted_empty = True
                fields[-1].append(Part(part[1]))
                started = True
                if part[2]:
                    has_quoted_empty = True
            elif kind == "array":
                fields[-1].append(Part(part[2]))
            elif kind == "param":
                res = self.param(part[1], st, part[2], ctx)
                if isinstance(res, list):
                    if not res:
                        continue
                    for k, v in enumerate(res):
                        if k > 0:
                            fields.append([])
                        fields[-1].extend(v._flat())
                    has_quoted_empty = True
                else:
                    if part[2]:
                        has_quoted_empty = True
                    add(res, not part[2])
            elif kind == "cmd":
                add(self.cmdsub(part[1], part[2], st, ctx), not part[3])
                if part[3]:
                    has_quoted_empty = True
            elif kind == "arith":
                add(self.arith(part[1], part[2], st, ctx), not part[3])
        out = [Value(_merge(tuple(f))) for f in fields]
        out = [v for v in out if v.parts or has_quoted_empty]
        return out

    def word_value(self, w: Word, st: State, ctx: Ctx) -> Value:
        return concat(_join(self.expand_word(w, st, ctx, split=False)))

    def arith(self, src: str, raw: str, st: State, ctx: Ctx) -> Value:
        random = False
        unknown = False

        def var(m: re.Match[str]) -> str:
            nonlocal random, unknown
            name = m.group(1) or m.group(2)
            if name == "RANDOM":
                if st.rand_seed is not None:
                    value, st.rand_seed = bash_random(st.rand_seed)
                    return str(value)
                random = True
                return "1"
            v = self.lookup(name, st)
            val = self._scalar(v, name, "") if v is not _NEVER else Value.lit("0")
            if val.text is None or not re.fullmatch(r"\s*-?\d+\s*", val.text or ""):
                unknown = True
                return "0"
            return val.text.strip()

        expr = re.sub(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?|\b([A-Za-z_][A-Za-z0-9_]*)\b", var, src)
        if random:
            return _unknown_ref(raw, random=True)
        if unknown or not re.fullmatch(r"[\d\s+\-*/%()<>|&^~!=]*", expr) or len(expr) > 200 or "**" in expr or \
                any(int(n) > 64 for n in re.findall(r"<<\s*(\d+)", expr)) or re.search(r"<<\s*[^\d\s]", expr):
            return _unknown_ref(raw)  # also: nothing that could make a huge number
        try:
            py = re.sub(r"(?<![/])/(?![/])", "//", expr).replace("&&", " and ").replace("||", " or ")
            return Value.lit(str(int(eval(py, {"__builtins__": {}}, {}))))  # noqa: S307 - digits and operators only
        except Exception:  # noqa: BLE001
            return _unknown_ref(raw)

    def cmdsub(self, src: str, raw: str, st: State, ctx: Ctx) -> Value:
        """What `$(...)` prints, when its commands are ones whose output the text determines (dirname, pwd, echo,
        basename, realpath, cd && pwd); anything else is unknown, and `shuf`/`$RANDOM` make it random."""
        if self.depth > self.MAX_DEPTH:
            return _unknown_ref(raw)
        m = _COUNT_FIELDS.fullmatch(src.strip())
        if m:
            # `$(echo $CUDA_VISIBLE_DEVICES | awk -F, '{print NF}')`, `... | tr ',' '\n' | wc -l`: the GPU count
            v = self.expand_str(m.group(1).strip('"'), st, ctx)
            if v.text is None:
                return _unknown_ref(raw)
            return Value.lit(str(len(v.text.strip().split(",")) if v.text.strip() else 0))
        sub = st.copy()
        captured: list[Value] = []
        inner = Ctx(line=ctx.line, end_line=ctx.end_line, capture=captured, bodies=[])
        self.depth += 1
        n_before = len(self.out)
        try:
            node, bodies = parse(src)
            inner.bodies = bodies
            self.exec_node(node, sub, inner)
        except (ParseError, RecursionError, IndexError):
            captured.append(_unknown_ref(raw))
        finally:
            self.depth -= 1
        del self.out[n_before:]  # what runs inside $(...) to compute a value is not a job
        if not captured:
            return Value()
        v = concat(captured)
        if not v.known:
            return _unknown_ref(raw, v.random)
        return Value.lit((v.text or "").rstrip("\n"))


# `echo "$X" | awk -F, '{print NF}'` and `echo "$X" | tr ',' '\n' | wc -l`: how many comma-separated fields
_COUNT_FIELDS = re.compile(r"""echo\s+(?:-n\s+)?("?\$\{?[A-Za-z_][A-Za-z0-9_]*\}?"?|[\w,]+)\s*\|\s*"""
                           r"""(?:awk\s+-F\s*['"]?,['"]?\s+['"]\{\s*print\s+NF\s*\}['"]|"""
                           r"""tr\s+['"]?,['"]?\s+['"]\\n['"]\s*\|\s*wc\s+-l)""")


def _strip(s: str, op: str, pat: str) -> str:
    rx = _glob_rx(pat)
    if op in ("#", "##"):
        cands = [i for i in range(len(s) + 1) if re.fullmatch(rx, s[:i], re.S)]
        if not cands:
            return s
        return s[(min(cands) if op == "#" else max(cands)):]
    cands = [i for i in range(len(s) + 1) if re.fullmatch(rx, s[i:], re.S)]
    if not cands:
        return s
    return s[:(max(cands) if op == "%" else min(cands))]


def _glob_rx(pat: str) -> str:
    out = []
    i = 0
    while i < len(pat):
        c = pat[i]
        if c == "*":
            out.append(".*")
        elif c == "?":
            out.append(".")
        elif c == "[":
            j = pat.find("]", i + 1)
            if j > 0:
                out.append("[" + pat[i + 1:j].replace("!", "^", 1) + "]")
                i = j
            else:
                out.append(re.escape(c))
        elif c == "\\" and i + 1 < len(pat):
            out.append(re.escape(pat[i + 1]))
            i += 1
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


def _dq_parts(text: str) -> list[WordPart]:
    lex = Lexer(text)
    parts: list[WordPart] = []
    lex.s = text + '"'
    lex._dquoted(parts)
    return parts
