"""Read a shell script the way bash would run it, without running anything.

The reader parses the script (quotes, `${...}`, `$(...)`, here-docs, `if`/`case`/`for`/`while`, functions) and walks
it with a symbolic state: variables (assignments, `export`, `local`, `${VAR:-d}`, `${VAR:=d}`, arrays), the working
directory (`cd`, `$(dirname "$0")`, `${BASH_SOURCE[0]%/*}`), function calls and command strings (`eval`, `$cmd`,
`"${cmd[@]}"`, `bash -c`, `tmux`, `screen`, `srun`, `ssh`). Every simple command it would execute comes out as a
`Command`: its words after expansion, its environment, redirections, the line it starts on in the script file, and
the wrappers it sits inside.

Values the text cannot determine stay unknown and are never guessed: `$(date ...)`, `$RANDOM` (unless the script
seeds it with `RANDOM=n`: then bash's own generator gives fixed values, computed here), positional
arguments, the environment, a variable that two branches of an `if` set differently. An unknown piece keeps the text
it was written as (`${TS}`), so a log path with unknown parts is still a pattern; a name the script gave an unknown
value is shown by that name (`$gpu`, not `$4`).
"""
from __future__ import annotations

import fnmatch
import os
import posixpath
import re
import time
from dataclasses import dataclass, field, replace

from oomfix.shparse import Lexer, Node, ParseError, Redir, ShellBudget, Simple, Word, WordPart, parse

MAX_VALUE = 1 << 20  # characters of one known value: no real path or command line comes near
MAX_ITEMS = 4096  # elements of one array (real launchers hold tens)
MAX_PARTS = 512  # known and unknown pieces of one value
TIME_BUDGET_S = 10.0  # reading one script (its sourced files and command strings included)

# --- values -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Part:
    text: str  # the text when known; as written when unknown
    known: bool = True
    random: bool = False  # computed from $RANDOM / shuf: unknown, and different on every run
    alias: str | None = None  # inside a named unknown value (`$RDZV` = unknown host + ":29292"): shown as this,
    first: bool = False  # once, at the region's first part; the parts keep what is known (the port)


@dataclass(frozen=True)
class Value:
    parts: tuple[Part, ...] = ()
    alias: str | None = None  # how to show an unknown value: the name the script gave it

    @staticmethod
    def lit(s: str) -> "Value":
        if len(s) > MAX_VALUE:
            return Value((Part("${...}", False),))  # grown past any real value (`A=${A//a/aaaa}` repeated)
        return Value((Part(s),)) if s else Value()

    @staticmethod
    def unknown(written: str, random: bool = False) -> "Value":
        return Value((Part(written, False, random),))

    @property
    def known(self) -> bool:
        return all(p.known for p in self.parts)

    @property
    def random(self) -> bool:
        return any(p.random for p in self.parts)

    @property
    def text(self) -> str | None:
        """The string, when every part is known."""
        return "".join(p.text for p in self.parts) if self.known else None

    @property
    def any_known(self) -> bool:
        """Does any of what is shown come from known text (not only names of unknown values)?"""
        return any(p.known and p.text and p.alias is None for p in self._flat())

    def show(self) -> str:
        out = []
        prev: Part | None = None
        for p in self._flat():
            if p.alias is None:
                out.append(p.text)
            elif p.first or prev is None or prev.alias != p.alias:
                out.append(p.alias)  # a named region is shown once, by its name
            prev = p
        return "".join(out)

    def pattern(self) -> re.Pattern[str]:
        """A regex a real path matches when it could be this value (unknown parts match anything)."""
        out = []
        for p in self.parts:
            out.append(re.escape(p.text) if p.known else ".*")
        return re.compile("".join(out) + r"\Z")

    def __add__(self, other: "Value") -> "Value":
        return Value(_merge(self._flat() + other._flat()))

    def _flat(self) -> tuple[Part, ...]:
        """The parts, a named unknown value's parts marked as its region (shown by the name, known text kept)."""
        if self.alias is not None and not self.known:
            if not self.parts:
                return (Part(self.alias, False, False, self.alias, True),)
            return tuple(Part(p.text, p.known, p.random, self.alias, k == 0) for k, p in enumerate(self.parts))
        return self.parts


def _merge(parts: tuple[Part, ...]) -> tuple[Part, ...]:
    out: list[Part] = []
    for p in parts:
        if not p.text and p.known and p.alias is None:
            continue
        if out and out[-1].known and p.known and out[-1].alias is None and p.alias is None:
            joined = out[-1].text + p.text
            # a value that grows past any real path or command is not worth carrying: unknown
            out[-1] = Part(joined) if len(joined) < 1_000_000 else Part("${...}", False)
        else:
            out.append(p)
    if len(out) > MAX_PARTS:
        return (Part("${...}", False),)  # `a=$a$a` repeated on an unknown value: parts double, none tells anything
    return tuple(out)


def concat(vals: list[Value]) -> Value:
    v = Value()
    for x in vals:
        v = v + x
    return v


# --- the walk ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Command:
    """One simple command the script would run, as far as the text tells."""

    argv: tuple[Value, ...]
    env: dict[str, Value]  # exported variables and the command's own VAR=value prefixes
    prefix_env: dict[str, Value]
    line: int  # where it starts in the script file (the outermost command, call site or wrapper)
    end_line: int
    background: bool
    redirs: tuple[tuple[str, str, Value], ...]  # (fd, op, target)
    pipeline: tuple[tuple[Value, ...], ...]  # argv of every command in its pipeline
    index: int  # its place in that pipeline
    via: tuple[str, ...]  # wrappers it runs inside, outermost first: nohup, setsid, tmux, srun, ssh ...
    cwd: str | None  # absolute when known
    cwd_rel: str | None  # relative to the directory the script was started from, when that is all we know
    remote: str | None  # the host of an ssh command string
    loop_vars: tuple[str, ...]  # loop variables in scope (the command may run once per value)
    loop_runs: int  # how many times the enclosing loops run it, when the text tells (else 0)
    async_path: tuple[int, ...]  # the `&`-started lists it is inside, outermost first (each has its own id)
    seq: int
    branches: tuple[tuple[int, int], ...] = ()  # the if/case branches it is in: two jobs in different branches of
    # one `if` never both run
    own_line: int | None = None  # its own line in the script file (a function body's line), None inside a string


UNSET = Value()  # a variable the script never set: its value comes from the environment


@dataclass
class State:
    vars: dict[str, object]  # Value | list[Value] | dict[str, Value]
    exported: set[str]
    cwd: str | None
    cwd_rel: str | None
    positional: list[Value] | None  # None at top level: the script's own arguments are unknown
    funcs: dict[str, Node]
    locals_stack: list[dict[str, object]] = field(default_factory=list)
    rand_seed: int | None = None  # `RANDOM=n` seeds bash's generator: every $RANDOM after it is fixed

    def copy(self) -> "State":
        return State(dict(self.vars), set(self.exported), self.cwd, self.cwd_rel,
                     list(self.positional) if self.positional is not None else None, dict(self.funcs),
                     [dict(x) for x in self.locals_stack], self.rand_seed)


_NEVER = object()


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


class Walker:
    MAX_DEPTH = 12
    MAX_COMMANDS = 20000

    def __init__(self, path: str, budget_s: float = TIME_BUDGET_S) -> None:
        self.path = os.path.abspath(path)
        self.out: list[Command] = []
        self.depth = 0
        self.sources_seen: set[str] = set()
        self.seq = 0
        self.deadline = time.monotonic() + budget_s
        self.budget_s = budget_s

    # context for the commands being emitted
    @dataclass
    class Ctx:
        line: int | None = None  # fixed line (inside a call, eval or command string)
        end_line: int | None = None
        background: bool = False
        via: tuple[str, ...] = ()
        redirs: tuple[tuple[str, str, Value], ...] = ()
        remote: str | None = None
        loop_vars: tuple[str, ...] = ()
        loop_runs: int = 1
        async_path: tuple[int, ...] = ()
        branches: tuple[tuple[int, int], ...] = ()  # (if/case id, branch taken): branches exclude each other
        in_string: bool = False  # parsed from a command string: its lines are not the file's
        own_line: int | None = None
        bodies: list[tuple[str, bool]] = field(default_factory=list)
        capture: list[Value] | None = None  # inside $(...): what the commands print
        pipeline: tuple[tuple[Value, ...], ...] = ()
        pipe_index: int = 0

    def run(self, src: str) -> list[Command]:
        st = State(vars={"0": Value.lit(self.path), "BASH_SOURCE": [Value.lit(self.path)]}, exported=set(), cwd=None,
                   cwd_rel=".", positional=None, funcs={})
        node, bodies = parse(src)
        ctx = Walker.Ctx(bodies=bodies)
        for item in node.items:
            try:
                self.exec_node(Node("list", [item]), st, ctx)
            except (re.error, ValueError, TypeError, IndexError, KeyError, AttributeError, RecursionError):
                continue  # a construct this reader gets wrong costs that statement, never the whole script
        return self.out

    # --- expansion -------------------------------------------------------------------------------------------

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

    def param(self, raw: str, st: State, quoted: bool, ctx: "Walker.Ctx") -> list[Value] | Value:
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

    def _op(self, v: Value, rest: str, raw: str, st: State, ctx: "Walker.Ctx", name: str,
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

    def expand_str(self, text: str, st: State, ctx: "Walker.Ctx", quoted: bool = True) -> Value:
        """Expand a fragment of text as if double-quoted (operator arguments, array indices)."""
        if "$" not in text and "`" not in text and "\\" not in text and "'" not in text and '"' not in text:
            return Value.lit(text)
        try:
            w = Word(tuple(_dq_parts(text)), text, 0)
        except Exception:  # noqa: BLE001 - an odd fragment is unknown, not an error
            return _unknown_ref(text)
        return concat(_join(self.expand_word(w, st, ctx, split=False)))

    def expand_key(self, text: str, st: State, ctx: "Walker.Ctx") -> str:
        """An array index or associative key, quotes removed."""
        try:
            return self.word_value(Word(Lexer(text)._word().parts, text, 0), st, ctx).show()
        except Exception:  # noqa: BLE001
            return text

    def expand_word(self, w: Word, st: State, ctx: "Walker.Ctx", split: bool = True) -> list[Value]:
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

    def word_value(self, w: Word, st: State, ctx: "Walker.Ctx") -> Value:
        return concat(_join(self.expand_word(w, st, ctx, split=False)))

    def arith(self, src: str, raw: str, st: State, ctx: "Walker.Ctx") -> Value:
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

    def cmdsub(self, src: str, raw: str, st: State, ctx: "Walker.Ctx") -> Value:
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
        inner = Walker.Ctx(line=ctx.line, end_line=ctx.end_line, capture=captured, bodies=[])
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

    # --- execution -------------------------------------------------------------------------------------------

    def exec_node(self, node: Node | Simple, st: State, ctx: "Walker.Ctx") -> None:
        if len(self.out) > self.MAX_COMMANDS or self.depth > self.MAX_DEPTH:
            return
        if time.monotonic() > self.deadline:
            raise ShellBudget(f"reading it took over {self.budget_s:g} s")
        if isinstance(node, Simple):
            self.exec_simple(node, st, ctx)
            return
        k = node.kind
        if node.redirs:
            ctx = replace(ctx, redirs=ctx.redirs + tuple(self._redirs(node.redirs, st, ctx)))
        if k == "list":
            for ao, bg in node.items:
                if bg:
                    self.seq += 1
                    self.exec_node(ao, st, replace(ctx, background=True, async_path=ctx.async_path + (self.seq,)))
                else:
                    self.exec_node(ao, st, ctx)
        elif k == "andor":
            for _op, p in node.items:
                self.exec_node(p, st, ctx)
        elif k == "pipeline":
            cmds = node.items
            if len(cmds) == 1:
                self.exec_node(cmds[0], st, ctx)
                return
            # every part of a pipeline runs in a subshell; remember the siblings for `| tee log` and `| sh`
            argvs = []
            for c in cmds:
                argvs.append(tuple(self.expand_word(w, st, ctx)[0] if self.expand_word(w, st, ctx) else Value()
                                   for w in c.words) if isinstance(c, Simple) else ())
            for idx, c in enumerate(cmds):
                self.exec_node(c, st.copy() if idx < len(cmds) - 1 else st,
                               replace(ctx, pipeline=tuple(argvs), pipe_index=idx))
        elif k in ("group",):
            self.exec_node(node.items[0], st, ctx)
        elif k == "subshell":
            self.exec_node(node.items[0], st.copy(), ctx)
        elif k == "func":
            st.funcs[str(node.extra)] = node.items[0]
        elif k == "if":
            live: list[tuple[Node | None, Node]] = []
            has_else = False
            for c, b in node.items:
                known = self._cond_value(c, st, ctx) if c is not None else True
                if known is False:
                    continue  # a test on known values that fails: its branch never runs
                if known is True:
                    live.append((None, b))  # runs whenever no earlier branch did: the rest are dead
                    has_else = True
                    break
                live.append((c, b))
            if has_else and len(live) == 1:
                self.exec_node(live[0][1], st, ctx)  # the one branch that runs: no fork
            elif live:
                self._branches(live, st, ctx, has_else=has_else)
        elif k == "case":
            subject = self.word_value(node.extra, st, ctx)  # type: ignore[arg-type]
            items = node.items
            if subject.text is not None:
                for pats, body in items:
                    if any(self._case_match(subject.text, p, st, ctx) for p in pats):
                        self.exec_node(body, st, ctx)
                        return
                return
            self._branches([(None, body) for _pats, body in items], st, ctx,
                           has_else=any(p.raw == "*" for pats, _ in items for p in pats))
        elif k == "for":
            var, words = node.extra  # type: ignore[misc]
            values: list[Value] | None = None
            if words is not None:
                values = []
                for w in words:
                    values.extend(self.expand_word(w, st, ctx))
            body = node.items[0]
            before = st.copy()
            runs = len(values) if values is not None and all(v.known for v in values) else 0
            if var:
                if values is not None and len(values) == 1 and values[0].known:
                    self.assign(var, values[0], st)
                else:
                    self.assign(var, Value((Part("$" + var, False),), "$" + var), st)
            inner = replace(ctx, loop_vars=ctx.loop_vars + ((var,) if var else ()),
                            loop_runs=(ctx.loop_runs * runs) if runs and ctx.loop_runs else 0)
            self.exec_node(body, st, inner)
            if runs == 0 or (values is not None and len(values) == 0):
                _merge_states(st, [before])
        elif k in ("while", "until"):
            cond, body = node.items
            before = st.copy()
            always = _is_true(cond) if k == "while" else False
            self.exec_node(cond, st, ctx)
            self.exec_node(body, st, replace(ctx, loop_runs=0))
            if not always:
                _merge_states(st, [before])

    def _cond_value(self, cond: Node | Simple, st: State, ctx: "Walker.Ctx") -> bool | None:
        """The exit status of an `if` condition when the text decides it: `true`/`false`/`:`, and `[ ]`, `[[ ]]`,
        `test` comparing known values (`mode=infer; if [ "$mode" = debug ]`, `[[ $1 != slurm ]]` under
        `source x.sh slurm`); None when it depends on anything else."""
        node: object = cond
        neg = False
        for _ in range(4):  # list -> and-or -> pipeline -> one simple command
            if isinstance(node, Node) and node.kind == "list" and len(node.items) == 1 and not node.items[0][1]:
                node = node.items[0][0]
            elif isinstance(node, Node) and node.kind == "andor" and len(node.items) == 1:
                node = node.items[0][1]
            elif isinstance(node, Node) and node.kind == "pipeline" and len(node.items) == 1:
                neg = bool(node.extra)
                node = node.items[0]
        if not isinstance(node, Simple) or node.assigns or node.redirs or not node.words:
            return None
        head = node.words[0].plain
        if head in ("true", ":", "false") and len(node.words) == 1:
            val = head != "false"
            return val != neg
        if head not in ("[", "[[", "test"):
            return None
        words = node.words[1:]
        if head in ("[", "[[") and (not words or words[-1].plain != ("]" if head == "[" else "]]")):
            return None
        if head != "test":
            words = words[:-1]
        if len(words) > 1 and words[0].plain == "!":
            neg, words = not neg, words[1:]
        vals = [self.word_value(w, st, ctx).text for w in words]
        if any(v is None for v in vals):
            return None
        res = _test(vals, [w.plain for w in words], pattern=head == "[[", quoted=[_quoted(w) for w in words])
        return None if res is None else res != neg

    def _case_match(self, s: str, pat: Word, st: State, ctx: "Walker.Ctx") -> bool:
        p = self.word_value(pat, st, ctx).text
        if p is None:
            return False
        return fnmatch.fnmatchcase(s, p.strip("\"'"))

    def _branches(self, clauses: list[tuple[Node | None, Node]], st: State, ctx: "Walker.Ctx",
                  has_else: bool) -> None:
        """Every branch may run: walk each on a copy; afterwards a variable keeps a value only if every path
        agrees on it."""
        ends = []
        self.seq += 1
        fork = self.seq
        for k, (cond, body) in enumerate(clauses):
            b = st.copy()
            if cond is not None:
                self.exec_node(cond, b, ctx)  # conditions of later branches run when earlier ones failed: still k
            self.exec_node(body, b, replace(ctx, branches=ctx.branches + ((fork, k),)))
            ends.append(b)
        if not has_else:
            ends.append(st.copy())
        base = ends[0]
        _merge_states(base, ends[1:])
        st.vars, st.exported, st.cwd, st.cwd_rel, st.funcs = base.vars, base.exported, base.cwd, base.cwd_rel, \
            base.funcs
        st.locals_stack = base.locals_stack

    def _redirs(self, redirs: list[Redir], st: State, ctx: "Walker.Ctx") -> list[tuple[str, str, Value]]:
        out = []
        for r in redirs:
            if r.target is None:
                continue
            out.append((r.fd, r.op, self.word_value(r.target, st, ctx)))
        return out

    def _assign_word(self, w: Word, st: State, ctx: "Walker.Ctx", name_it: bool = True) -> tuple[str, object] | None:
        """`NAME=value`, `NAME+=value`, `NAME[k]=v`, `NAME=(a b)`: the name and its new value. An unknown value is
        shown by the name from then on (`name_it`), except in a command's own `VAR=value` prefix, where what was
        written says more."""
        m = re.match(r"([A-Za-z_][A-Za-z0-9_]*)(\[([^\]]*)\])?(\+?)=", w.raw)
        if not m:
            return None
        name, _, index, plus = m.groups()
        rest_parts = _strip_prefix(w, len(m.group(0)))
        if rest_parts and rest_parts[0][0] == "array":
            body = rest_parts[0][1]
            node_words = _words_of(body)
            if re.match(r"\s*\[", body):  # declare -A m=( [k]=v ... )
                d: dict[str, Value] = {}
                for ww in node_words:
                    mm = re.match(r"\[([^\]]*)\]=", ww.raw)
                    if mm:
                        d[self.expand_key(mm.group(1), st, ctx)] = \
                            self.word_value(Word(_strip_prefix(ww, len(mm.group(0))), ww.raw, ww.line), st, ctx)
                val: object = d
            else:
                items = []
                for ww in node_words:
                    items.extend(self.expand_word(ww, st, ctx))
                    if len(items) > MAX_ITEMS:
                        break
                val = items
            if plus:
                old = self.lookup(name, st)
                if isinstance(old, list) and isinstance(val, list):
                    val = old + val
            if isinstance(val, (list, dict)) and len(val) > MAX_ITEMS:
                val = Value((Part("$" + name, False),), "$" + name)  # `A=("${A[@]}" "${A[@]}")` doubling: unknown
            return name, val
        value = self.word_value(Word(rest_parts, w.raw, w.line), st, ctx)
        in_function = st.positional is not None and bool(st.locals_stack)
        # a value with a known beginning is shown partly expanded (`log/${start_time}.log`); one that starts
        # unknown (`$(pwd)/logs/...`) has nothing to anchor it, and the script's name for it says more
        if name_it and not value.known and value.alias is None and not _named_ref(value) and \
                not (value.parts and value.parts[0].known and value.parts[0].text) and not (
                in_function and re.fullmatch(r'"?\$\{?[0-9]+\}?"?', w.raw[len(m.group(0)):])):
            # the script named an unknown value: show it by that name from now on. A function's parameter
            # (`local log=$5`) stays the caller's text: the job is listed per call site.
            value = Value(value.parts, "$" + name)
        if index is not None:
            old = self.lookup(name, st)
            key = self.expand_key(index, st, ctx)
            if isinstance(old, dict):
                nd = dict(old)
                nd[key] = value
                return name, nd
            lst = list(old) if isinstance(old, list) else []
            if key.isdigit():
                i = int(key)
                while len(lst) <= i:
                    lst.append(Value())
                lst[i] = value
                return name, lst
            return name, {key: value}
        if plus:
            old = self.lookup(name, st)
            if isinstance(old, Value):
                value = old + value
        return name, value

    def exec_simple(self, cmd: Simple, st: State, ctx: "Walker.Ctx") -> None:
        line = ctx.line if ctx.line is not None else cmd.line
        end_line = ctx.end_line if ctx.end_line is not None else cmd.end_line
        here = replace(ctx, line=line, end_line=end_line, own_line=None if ctx.in_string else cmd.line)
        argv: list[Value] = []
        for w in cmd.words:
            argv.extend(self.expand_word(w, st, here))
        prefix: dict[str, Value] = {}
        for a in cmd.assigns:
            res = self._assign_word(a, st, here, name_it=not cmd.words)
            if res is None:
                continue
            name, val = res
            if argv:
                prefix[name] = val if isinstance(val, Value) else Value.unknown("$" + name)
            else:
                self.assign(name, val, st)
        if cmd.words and cmd.words[0].plain in ("export", "declare", "typeset", "local", "readonly"):
            self._declare(cmd.words, st, here)
            return
        redirs = ctx.redirs + tuple(self._redirs(cmd.redirs, st, here))
        heredoc = next((r.heredoc for r in cmd.redirs if r.heredoc is not None), None)
        if not argv:
            return
        self.dispatch(argv, prefix, st, replace(here, redirs=redirs), heredoc)

    def _declare(self, words: list[Word], st: State, ctx: "Walker.Ctx") -> None:
        base = words[0].plain
        opts: set[str] = set()
        for w in words[1:]:
            if w.raw.startswith("-"):
                opts.update("-" + c for c in w.raw[1:])
                continue
            local = base == "local" or (base in ("declare", "typeset") and bool(st.locals_stack) and "-g" not in opts)
            res = self._assign_word(w, st, ctx)
            if res is not None:
                nm, val = res
                if "-A" in opts and isinstance(val, list) and not val:
                    val = {}
                self.assign(nm, val, st, local=local)
            else:
                nm = self.word_value(w, st, ctx).show()
                if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", nm):
                    continue
                if "-A" in opts:
                    self.assign(nm, {}, st, local=local)
                elif "-a" in opts:
                    self.assign(nm, [], st, local=local)
                elif base == "local":
                    self.assign(nm, Value(), st, local=True)
            if base == "export" or "-x" in opts:
                st.exported.add(nm)

    def _env(self, st: State, prefix: dict[str, Value]) -> dict[str, Value]:
        env = {}
        for name in st.exported:
            v = self.lookup(name, st)
            if isinstance(v, Value):
                env[name] = v
        # plain variables set in the script are not in a child's environment unless exported, but a job
        # reading them (CUDA_VISIBLE_DEVICES=... on its own line, then `export`) is the common case handled above
        env.update(prefix)
        return env

    def emit(self, argv: list[Value], prefix: dict[str, Value], st: State, ctx: "Walker.Ctx") -> None:
        self.seq += 1
        self.out.append(Command(
            argv=tuple(argv), env=self._env(st, prefix), prefix_env=dict(prefix), line=ctx.line or 0,
            end_line=ctx.end_line or ctx.line or 0, background=ctx.background, redirs=ctx.redirs,
            pipeline=ctx.pipeline, index=ctx.pipe_index, via=ctx.via, cwd=st.cwd,
            cwd_rel=st.cwd_rel, remote=ctx.remote, loop_vars=ctx.loop_vars, loop_runs=ctx.loop_runs,
            async_path=ctx.async_path, own_line=ctx.own_line, branches=ctx.branches, seq=self.seq))

    def run_string(self, src: Value | str, st: State, ctx: "Walker.Ctx", heredoc_bodies: bool = False) -> None:
        """Run a command string (eval, bash -c, a tmux or ssh command) at the line of the command that holds it."""
        text = src if isinstance(src, str) else src.show()
        if self.depth > self.MAX_DEPTH:
            return
        self.depth += 1
        try:
            node, bodies = parse(text)
            self.exec_node(node, st, replace(ctx, bodies=bodies, in_string=True))
        except (ParseError, RecursionError, IndexError, re.error, ValueError, TypeError, KeyError, AttributeError):
            pass
        finally:
            self.depth -= 1

    def dispatch(self, argv: list[Value], prefix: dict[str, Value], st: State, ctx: "Walker.Ctx",
                 heredoc: int | None = None) -> None:
        """Builtins that change the walk's state, functions, and wrappers whose real command is inside."""
        name = argv[0].text
        args = argv[1:]
        if name is None:
            self.emit(argv, prefix, st, ctx)  # `$cmd` with unknown parts: split what is known
            return
        base = posixpath.basename(name)
        if ctx.capture is not None and self._capture(base, args, st, ctx):
            return
        if name in st.funcs and self.depth < self.MAX_DEPTH:
            body = st.funcs[name]
            saved = st.positional
            st.positional = list(args)
            st.locals_stack.append({})
            self.depth += 1
            try:
                self.exec_node(body, st, ctx)
            finally:
                self.depth -= 1
                st.locals_stack.pop()
                st.positional = saved
            return
        if base == "unset":
            for a in args:
                if a.text and not a.text.startswith("-"):
                    st.vars.pop(a.text, None)
                    st.exported.discard(a.text)
            return
        if base in ("cd", "pushd"):
            target = next((a for a in args if not (a.text or "").startswith("-")), None)
            self._cd(target, st)
            return
        if base == "popd":
            st.cwd, st.cwd_rel = None, None
            return
        if base == "shift":
            if st.positional is not None:
                n = int(args[0].text) if args and args[0].text and args[0].text.isdigit() else 1
                st.positional = st.positional[n:]
            return
        if base == "set" and args and args[0].text == "--":
            st.positional = list(args[1:])
            return
        if base == "eval":
            self.emit(argv, prefix, st, ctx)
            self.run_string(concat(_join(args)), st, ctx)
            return
        if base in ("source", ".") and args:
            self._source(args[0], args[1:], st, ctx)
            return
        if base in ("read", "mapfile", "readarray"):
            names = [a.text for a in args if a.text and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", a.text)]
            opts = {a.text for a in args if a.text and a.text.startswith("-")}
            if base == "read" and names and heredoc is not None and heredoc < len(ctx.bodies) and \
                    ("-d" in opts or len(names) == 1):
                # `read -r -d '' CMD <<EOF ... EOF`: the variable holds the here-doc (a command kept in a string)
                body, expand = ctx.bodies[heredoc]
                text = body if "-d" in opts else body.split("\n", 1)[0]
                if "-r" not in opts:
                    text = text.replace("\\\n", "")
                val = self.expand_str(text, st, ctx) if expand else Value.lit(text)
                self.assign(names[-1], Value(val.parts) if val.known else Value(val.parts, "$" + names[-1]), st)
                return
            here = [t for _fd, op, t in ctx.redirs if op == "<<<"]
            arr = any(o.startswith("-") and "a" in o[1:] for o in opts)
            if base == "read" and arr and names and here and here[-1].text is not None:
                # `IFS=, read -ra GPUS <<< "$CUDA_VISIBLE_DEVICES"`: the here-string split on IFS into an array
                ifs_v = prefix.get("IFS") or self.lookup("IFS", st)
                ifs = ifs_v.text if isinstance(ifs_v, Value) and ifs_v.text is not None else " \t\n"
                text = here[-1].text.rstrip("\n")
                pieces = re.split("[" + re.escape(ifs) + "]", text) if ifs else [text]
                if ifs and not ifs.strip():
                    pieces = [x for x in pieces if x]
                self.assign(names[-1], [Value.lit(x) for x in pieces[:MAX_ITEMS]], st)
                return
            for n in names:
                self.assign(n, Value((Part("$" + n, False),), "$" + n), st)
            return
        if base in ("bash", "sh", "zsh", "dash", "ksh"):
            cmd_str = _shell_c(args)
            if cmd_str is not None:
                child = st.copy()
                child.vars = {k: v for k, v in st.vars.items() if k in st.exported or k in ("0",)}
                child.vars.update(prefix)
                child.positional = None
                self.run_string(cmd_str, child, replace(ctx, via=ctx.via + (base + " -c",)))
                return
            if heredoc is not None and not [a for a in args if not (a.text or "-").startswith("-")]:
                self._heredoc_script(heredoc, st, ctx, base)
                return
            files = [a for a in args if not (a.text or "-").startswith("-")]
            if files and self._run_script(files[0], files[1:], prefix, st, ctx, base):
                self.emit(argv, prefix, st, ctx)
                return
        self.emit(argv, prefix, st, ctx)
        if base == "wait":
            return
        self._wrappers(base, argv, prefix, st, ctx, heredoc)

    def _wrappers(self, base: str, argv: list[Value], prefix: dict[str, Value], st: State, ctx: "Walker.Ctx",
                  heredoc: int | None) -> None:
        """The command inside a wrapper runs too: nohup/setsid/env/timeout/... pass their argv on; tmux, ssh and
        `sbatch --wrap` take a command string."""
        args = argv[1:]
        inner: list[Value] | None = None
        texts = [a.text for a in args]
        if base in ("nohup", "exec", "command", "builtin", "time", "unbuffer", "caffeinate", "nice", "ionice",
                    "stdbuf", "setsid", "sudo", "numactl", "taskset", "chrt", "timeout", "env", "systemd-run",
                    "srun", "salloc", "dtach", "xvfb-run", "catchsegv", "flock"):
            i = 0
            takes_value = _WRAPPER_VALUE_OPTS.get(base, set())
            while i < len(args):
                t = texts[i]
                if t is None:
                    i += 1  # "$@" and friends: extra options of unknown content
                    continue
                if base == "env" and re.match(r"[A-Za-z_][A-Za-z0-9_]*=", t):
                    prefix = _with_env(prefix, t)
                    i += 1
                    continue
                if t.startswith("-"):
                    i += 1
                    if t in takes_value or (base in ("srun", "salloc") and t.startswith("--") and "=" not in t and
                                            t not in _SRUN_FLAGS):
                        i += 1
                    continue
                break
            if base == "timeout" and i < len(args):
                i += 1  # the duration
            if base == "taskset" and i < len(args) and "-c" not in texts[:i]:
                i += 1  # the mask
            if base == "dtach":
                i += 1
            if base == "flock" and i < len(args):
                i += 1
            inner = list(args[i:])
            if base == "sudo" and inner:
                pass
        elif base in ("conda", "mamba", "micromamba", "uv", "poetry", "pipenv", "pixi") and texts[:1] == ["run"]:
            i = 1
            while i < len(args) and (texts[i] or "").startswith("-"):
                i += 2 if texts[i] in ("-n", "--name", "-p", "--prefix", "-e", "--environment") else 1
            inner = list(args[i:])
        elif base in ("docker", "podman", "nvidia-docker") and texts[:1] in (["run"], ["exec"]):
            # `docker run [OPTIONS] IMAGE CMD...`, `docker exec [OPTIONS] CONTAINER CMD...`: the command runs in the
            # container; `-e K=V` sets its environment; `-d` detaches it from the terminal (a SIGHUP does not reach it)
            i, detached = 1, False
            while i < len(args):
                t = texts[i]
                if t is None:
                    i += 1
                    continue
                if not t.startswith("-") or t == "-":
                    break
                name, eq, val = t.partition("=")
                if t.startswith("--"):
                    detached = detached or name == "--detach"
                    takes = not eq and name in _DOCKER_VALUE_OPTS
                    value = texts[i + 1] if takes and i + 1 < len(texts) else (val if eq else None)
                    if name == "--env" and value and "=" in value:
                        prefix = _with_env(prefix, value)
                    i += 2 if takes else 1
                    continue
                letters = t[1:]
                j = next((k for k, c in enumerate(letters) if c in _DOCKER_SHORT_VALUE), None)
                detached = detached or "d" in letters[:j]
                if j is None:
                    i += 1
                    continue
                value = letters[j + 1:] or (texts[i + 1] if i + 1 < len(texts) else None)
                if letters[j] == "e" and value and "=" in value:
                    prefix = _with_env(prefix, value)
                i += 1 if letters[j + 1:] else 2
            inner = list(args[i + 1:])  # after the image (or the container)
            if inner:
                via = ctx.via + (base,) + (("container-detached",) if detached and texts[0] == "run" else ())
                self.dispatch(inner, prefix, st, replace(ctx, via=via))
            return
        elif base in ("apptainer", "singularity") and texts[:1] == ["exec"]:
            i = 1
            while i < len(args) and (texts[i] or "x").startswith("-"):
                t = texts[i] or ""
                i += 2 if "=" not in t and t in _APPTAINER_VALUE_OPTS else 1
            inner = list(args[i + 1:])  # after the image
            if inner:
                self.dispatch(inner, prefix, st, replace(ctx, via=ctx.via + (base,)))
            return
        elif base == "screen":
            i = 0
            while i < len(args) and (texts[i] or "").startswith("-"):
                i += 2 if texts[i] in ("-S", "-c", "-L", "-Logfile", "-t", "-p", "-X", "-dmS", "-DmS") or \
                    (texts[i] or "").endswith("S") else 1
            inner = list(args[i:])
            if len(inner) == 1:
                self.run_string(inner[0], st.copy(), replace(ctx, via=ctx.via + ("screen",), redirs=(),
                                                            background=False))
                return
        elif base == "tmux":
            sub = texts[0] if texts else None
            if sub in ("new", "new-session", "new-window", "neww", "split-window", "splitw", "respawn-pane",
                       "send-keys", "send"):
                i = 1
                rest: list[Value] = []
                while i < len(args):
                    t = texts[i]
                    if t is not None and t.startswith("-") and t != "-":
                        i += 2 if t in ("-s", "-n", "-c", "-t", "-x", "-y", "-e", "-F", "-l") else 1
                        continue
                    rest.append(args[i])
                    i += 1
                if sub in ("send-keys", "send"):
                    rest = [a for a in rest if a.text not in ("Enter", "C-m", "KPEnter")]
                if rest:
                    self.run_string(concat(_join(rest)), st.copy(),
                                    replace(ctx, via=ctx.via + ("tmux",), redirs=(), background=False))
            return
        elif base == "ssh":
            i = 0
            while i < len(args) and (texts[i] or "x").startswith("-"):
                i += 2 if (texts[i] or "")[-1:] in "pilLoFJRDbcemOQSWwEB" and len(texts[i] or "") == 2 else 1
            host = args[i].show() if i < len(args) else None
            rest = list(args[i + 1:])
            remote = State(vars={"0": Value.unknown("$0")}, exported=set(), cwd=None, cwd_rel=None, positional=None,
                           funcs={})
            rctx = replace(ctx, via=ctx.via + ("ssh",), remote=host)
            shell_only = len(rest) <= 2 and bool(rest) and rest[0].text in ("bash", "sh", "zsh") and \
                all(a.text in ("-s", "-l", "-x", "-e", "-ex") for a in rest[1:])
            if rest and not (shell_only and heredoc is not None):
                self.run_string(concat(_join(rest)), remote, rctx)
            elif heredoc is not None:
                self._heredoc_script(heredoc, remote, rctx, "ssh")
            return
        elif base == "sbatch":
            if heredoc is not None and not any(t is None or not t.startswith("-") for t in texts):
                # `sbatch <<EOF ... EOF`: the here-doc is the batch script (its #SBATCH lines are comments)
                self._heredoc_script(heredoc, st.copy(), ctx, "sbatch")
                return
            for j, t in enumerate(texts):
                if t and t.startswith("--wrap"):
                    s = t.partition("=")[2] if "=" in t else (args[j + 1].show() if j + 1 < len(args) else "")
                    self.run_string(s, st.copy(), replace(ctx, via=ctx.via + ("sbatch",)))
                    return
            # `sbatch [OPTIONS] script.slurm ARGS`: the batch script of the tree runs under the scheduler
            i = 0
            while i < len(args) and (texts[i] or "-").startswith("-"):
                t = texts[i] or ""
                i += 2 if (t in _SBATCH_VALUE_OPTS or (t.startswith("--") and "=" not in t and
                                                       t not in _SBATCH_FLAGS)) else 1
            if i < len(args):
                self._run_script(args[i], list(args[i + 1:]), prefix, st, ctx, "sbatch",
                                 (".sh", ".bash", ".slurm", ".sbatch", ".job", ".sub"))
            return
        if inner:
            if base == "systemd-run":
                base = "systemd-run"
            self.dispatch(inner, prefix, st, replace(ctx, via=ctx.via + (base,)))

    def _heredoc_script(self, idx: int, st: State, ctx: "Walker.Ctx", via: str) -> None:
        if idx >= len(ctx.bodies):
            return
        body, expand = ctx.bodies[idx]
        if expand:
            body = self.expand_str(body, st, ctx).show()
        self.run_string(body, st, replace(ctx, via=ctx.via + (via + " <<",)))

    def _capture(self, base: str, args: list[Value], st: State, ctx: "Walker.Ctx") -> bool:
        """Inside $(...): commands whose output the text determines."""
        cap = ctx.capture
        assert cap is not None
        texts = [a.text for a in args]
        if base == "pwd":
            cap.append(Value.lit(st.cwd + "\n") if st.cwd else Value.unknown("$(pwd)"))
            return True
        if base == "echo":
            words = [a for a in args if not (a.text or "").startswith("-n")]
            cap.append(concat(_join(words)) + Value.lit("\n"))
            return True
        if base in ("dirname", "basename", "realpath", "readlink"):
            paths = [a for a, t in zip(args, texts) if not (t or "").startswith("-")]
            if not paths or paths[0].text is None:
                cap.append(Value.unknown(f"$({base} ...)"))
                return True
            p = paths[0].text
            if base == "dirname":
                r = posixpath.dirname(p.rstrip("/")) or "."
            elif base == "basename":
                r = posixpath.basename(p.rstrip("/"))
                if len(paths) > 1 and paths[1].text and r.endswith(paths[1].text):
                    r = r[: -len(paths[1].text)]
            else:
                r = self._abs(p, st)
                if r is None:
                    cap.append(Value.unknown(f"$({base} {p})"))
                    return True
            cap.append(Value.lit(r + "\n"))
            return True
        # `$(which torchrun)`, `$(command -v deepspeed)`, `$(type -P accelerate)`: the path of that program, which
        # the text cannot tell; its name is what runs, and what a launcher is recognised by
        if base in ("which", "command", "type") and (base == "which" or (texts[:1] in (["-v"], ["-P"], ["-p"]))):
            names = [t for t in texts if t is not None and not t.startswith("-")]
            if len(names) == 1 and len(names) == len([a for a in args if not (a.text or "").startswith("-")]) \
                    and re.fullmatch(r"[\w.+-]+", names[0]):
                cap.append(Value.lit(names[0] + "\n"))
                return True
        if base == "seq" and 1 <= len(args) <= 3 and all(t is not None and re.fullmatch(r"-?\d+", t) for t in texts):
            nums = [int(t) for t in texts]  # type: ignore[arg-type]
            first, step, last = (1, 1, nums[0]) if len(nums) == 1 else \
                ((nums[0], 1, nums[1]) if len(nums) == 2 else (nums[0], nums[1], nums[2]))
            seq = range(first, last + (1 if step > 0 else -1), step) if step else range(0)
            cap.append(Value.lit("".join(f"{n}\n" for n in seq[:4096])))  # a range slice stays lazy
            return True
        if base in ("cd", "pushd", "popd", "export", "local", "set", "true", ":"):
            return False
        if base in ("shuf",) or (base.startswith("python") and any("random" in (t or "") for t in texts)):
            cap.append(Value.unknown("$(" + base + " ...)", random=True))
            return True
        cap.append(Value.unknown("$(" + base + " ...)"))
        return True

    def _abs(self, p: str, st: State) -> str | None:
        if p.startswith("/"):
            return posixpath.normpath(p)
        if st.cwd:
            return posixpath.normpath(posixpath.join(st.cwd, p))
        return None

    def _cd(self, target: Value | None, st: State) -> None:
        if target is None or target.text is None or target.text in ("-", "~") or target.text.startswith("~"):
            st.cwd, st.cwd_rel = None, None
            return
        t = target.text
        if t.startswith("/"):
            st.cwd, st.cwd_rel = posixpath.normpath(t), None
        elif st.cwd:
            st.cwd = posixpath.normpath(posixpath.join(st.cwd, t))
        elif st.cwd_rel is not None:
            st.cwd_rel = posixpath.normpath(posixpath.join(st.cwd_rel, t))
        else:
            st.cwd, st.cwd_rel = None, None

    def _script_file(self, target: Value, st: State,
                     exts: tuple[str, ...] = (".sh", ".bash", ".env")) -> tuple[str, str] | None:
        """Another script of the tree a command runs or sources: (real path, text); never one that is already
        running in this walk (a launcher that re-runs itself would otherwise never end)."""
        p = target.text
        if p is None or p.startswith("~"):
            return None
        cands = [p] if p.startswith("/") else []
        if not cands:
            if st.cwd:
                cands.append(posixpath.join(st.cwd, p))
            d = os.path.dirname(self.path)
            for _ in range(6):  # started from the script's directory or one of its ancestors
                cands.append(posixpath.join(d, p))
                if os.path.dirname(d) == d:
                    break
                d = os.path.dirname(d)
        for c in cands:
            real = os.path.realpath(c)
            if os.path.isfile(real) and real not in self.sources_seen and real != self.path and \
                    real.endswith(exts) and os.path.getsize(real) < 1_000_000:
                try:
                    return real, open(real, encoding="utf-8", errors="replace").read()
                except OSError:
                    return None
        return None

    def _source(self, target: Value, args: list[Value], st: State, ctx: "Walker.Ctx") -> None:
        found = self._script_file(target, st)
        if found is None:
            return
        saved = st.positional
        if args:
            st.positional = list(args)
        self.sources_seen.add(found[0])
        try:
            self.run_string(found[1], st, ctx)
        finally:
            self.sources_seen.discard(found[0])
            st.positional = saved

    def _run_script(self, target: Value, args: list[Value], prefix: dict[str, Value], st: State,
                    ctx: "Walker.Ctx", shell: str, exts: tuple[str, ...] = (".sh", ".bash", ".env")) -> bool:
        """`bash other.sh ARGS`: the other script runs in a child shell (exported variables, its own $0 and
        arguments, the caller's directory); its jobs are the caller's, at the calling line."""
        found = self._script_file(target, st, exts)
        if found is None:
            return False
        real, text = found
        child = st.copy()
        child.vars = {k: v for k, v in st.vars.items() if k in st.exported}
        child.vars.update(prefix)
        child.vars["0"] = Value.lit(real)
        child.vars["BASH_SOURCE"] = [Value.lit(real)]
        child.positional = list(args)
        child.funcs = {}
        self.sources_seen.add(real)
        try:
            self.run_string(text, child, replace(ctx, via=ctx.via + (shell,)))
        finally:
            self.sources_seen.discard(real)
        return True


_WRAPPER_VALUE_OPTS = {
    "nice": {"-n", "--adjustment"}, "ionice": {"-c", "-n", "-p", "--class", "--classdata"},
    "timeout": {"-s", "--signal", "-k", "--kill-after"}, "sudo": {"-u", "-g", "-C", "-D", "-h", "-p", "-r", "-t", "-U"},
    "numactl": {"-C", "-N", "-m", "-p", "-i", "--physcpubind", "--cpunodebind", "--membind", "--preferred",
                "--interleave"}, "taskset": set(), "chrt": {"-p"},
    "env": {"-u", "--unset", "-C", "--chdir", "-S", "--split-string"},
    "systemd-run": {"-u", "--unit", "-p", "--property", "--description", "--slice", "-E", "--setenv", "-M",
                    "--machine", "--uid", "--gid", "--working-directory", "-H", "--host"},
    "srun": {"-N", "-n", "-p", "-c", "-t", "-w", "-J", "-A", "-G", "-o", "-e", "-q", "-x", "-C", "-d", "-D", "-K",
             "-L", "-m", "-r", "-T", "-W", "--jobid"},
    "salloc": {"-N", "-n", "-p", "-c", "-t", "-w", "-J", "-A", "-G", "-q", "-x", "-C"},
    "stdbuf": {"-i", "-o", "-e"}, "flock": {"-w", "-E"},
}
# docker/podman run and exec options that take a value (docker/cli command/container/opts.go); the rest are flags
_DOCKER_VALUE_OPTS = {
    "--env", "--env-file", "--volume", "--mount", "--workdir", "--user", "--name", "--gpus", "--network", "--net",
    "--ipc", "--shm-size", "--entrypoint", "--runtime", "--ulimit", "--cpus", "--cpuset-cpus", "--device",
    "--cap-add", "--cap-drop", "--security-opt", "--hostname", "--label", "--add-host", "--publish", "--memory",
    "--memory-swap", "--platform", "--pid", "--restart", "--log-driver", "--log-opt", "--cgroupns", "--tmpfs",
    "--volumes-from", "--label-file", "--stop-signal", "--stop-timeout", "--pull", "--dns", "--expose", "--link",
    "--attach", "--cidfile", "--group-add", "--health-cmd", "--uts", "--userns", "--detach-keys", "--mac-address",
    "--ip", "--cpu-shares", "--blkio-weight", "--oom-score-adj", "--pids-limit", "--storage-opt", "--sysctl",
}
_DOCKER_SHORT_VALUE = "evwupmhlac"  # -e K=V, -v a:b, -w DIR, -u USER, -p PORTS, -m MEM, -h HOST, -l LABEL, -a, -c
_APPTAINER_VALUE_OPTS = {"-B", "--bind", "--env", "--env-file", "-H", "--home", "--pwd", "-W", "--workdir",
                         "-o", "--overlay", "--security", "--network", "--mount", "--app"}
# sbatch options that take a separate value (slurm's sbatch --help); long options without `=` take one too,
# except these flags
_SBATCH_VALUE_OPTS = {"-A", "-p", "-J", "-o", "-e", "-N", "-n", "-t", "-c", "-w", "-x", "-C", "-q", "-G", "-D", "-a",
                      "-d", "-M", "-L", "-F", "-i", "-m", "-b"}
_SBATCH_FLAGS = {"--exclusive", "--requeue", "--no-requeue", "--parsable", "--wait", "--test-only", "--hold",
                 "--overcommit", "--contiguous", "--spread-job", "--use-min-nodes", "--oversubscribe", "--quiet",
                 "--verbose", "--ignore-pbs", "--reboot", "--no-kill"}
_SRUN_FLAGS = {"--exclusive", "--overcommit", "--pty", "--label", "--unbuffered", "--kill-on-bad-exit", "--overlap",
               "--no-kill", "--quiet", "--verbose", "--exact", "--whole", "--container-remap-root",
               "--container-mount-home", "--no-container-mount-home", "--container-writable", "--oversubscribe"}


def _with_env(prefix: dict[str, Value], assignment: str) -> dict[str, Value]:
    """The environment a wrapper's `NAME=VALUE` (env's operand, docker's -e) adds to the command it runs."""
    k, _, v = assignment.partition("=")
    return {**prefix, k: Value.lit(v)}


def _join(vals: list[Value]) -> list[Value]:
    out: list[Value] = []
    for k, v in enumerate(vals):
        if k:
            out.append(Value.lit(" "))
        out.append(v)
    return out


def _named_ref(v: Value) -> bool:
    """An unknown value that is one reference to a named variable (`$gpu`, `${TS}`): already shown by its name."""
    return len(v.parts) == 1 and not v.parts[0].known and \
        re.fullmatch(r"\$(\{[A-Za-z_][A-Za-z0-9_]*([^A-Za-z0-9_].*)?\}|[A-Za-z_][A-Za-z0-9_]*)", v.parts[0].text) is not None


# `echo "$X" | awk -F, '{print NF}'` and `echo "$X" | tr ',' '\n' | wc -l`: how many comma-separated fields
_COUNT_FIELDS = re.compile(r"""echo\s+(?:-n\s+)?("?\$\{?[A-Za-z_][A-Za-z0-9_]*\}?"?|[\w,]+)\s*\|\s*"""
                           r"""(?:awk\s+-F\s*['"]?,['"]?\s+['"]\{\s*print\s+NF\s*\}['"]|"""
                           r"""tr\s+['"]?,['"]?\s+['"]\\n['"]\s*\|\s*wc\s+-l)""")


def _quoted(w: Word) -> bool:
    return any(p[-1] for p in w.parts if p[0] in ("lit", "param", "cmd", "arith"))


def _test(vals: list[str | None], plain: list[str | None], pattern: bool, quoted: list[bool]) -> bool | None:
    """`test`'s verdict on known words (bash's test.c): one word is true when non-empty; `-z`/`-n`; string and
    integer comparisons. In `[[ ]]`, the right side of `==`/`!=` is a glob pattern unless quoted."""
    v = [x or "" for x in vals]
    if len(v) == 1:
        return v[0] != ""
    if len(v) == 2 and plain[0] in ("-z", "-n"):
        return (v[1] == "") == (plain[0] == "-z")
    if len(v) != 3 or plain[1] is None:
        return None
    a, op, b = v[0], plain[1], v[2]
    if op in ("=", "==", "!="):
        if pattern and not quoted[2]:
            eq = fnmatch.fnmatchcase(a, b)
        else:
            eq = a == b
        return eq == (op != "!=")
    if op in ("-eq", "-ne", "-lt", "-gt", "-le", "-ge"):
        if not (re.fullmatch(r"\s*-?\d+\s*", a) and re.fullmatch(r"\s*-?\d+\s*", b)):
            return None
        x, y = int(a), int(b)
        return {"-eq": x == y, "-ne": x != y, "-lt": x < y, "-gt": x > y, "-le": x <= y, "-ge": x >= y}[op]
    return None


def _is_true(cond: Node) -> bool:
    try:
        ao = cond.items[0][0]
        pipe = ao.items[0][1]
        simple = pipe.items[0]
        return isinstance(simple, Simple) and len(simple.words) == 1 and simple.words[0].plain in ("true", ":")
    except (IndexError, AttributeError, TypeError):
        return False


def _merge_states(base: State, others: list[State]) -> None:
    """After branches or a loop that may not run: keep what every path agrees on; the rest is unknown."""
    names = set(base.vars)
    for o in others:
        names |= set(o.vars)
    for n in names:
        vals = [base.vars.get(n, _NEVER)] + [o.vars.get(n, _NEVER) for o in others]
        if all(v == vals[0] for v in vals):
            continue
        base.vars[n] = Value((Part("$" + n, False),), "$" + n)
    for o in others:
        base.exported |= o.exported
        for k, f in o.funcs.items():
            base.funcs.setdefault(k, f)
        if (o.cwd, o.cwd_rel) != (base.cwd, base.cwd_rel):
            base.cwd, base.cwd_rel = None, None


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


def _strip_prefix(w: Word, n: int) -> tuple[WordPart, ...]:
    """The parts of a word after its first n raw characters (the `NAME=` of an assignment): lexed again from the
    source text, so quotes inside `m["key"]=` cannot shift the cut."""
    rest = w.raw[n:]
    if not rest:
        return ()
    if rest.startswith("(") and rest.endswith(")"):
        return (("array", rest[1:-1], rest, False),)
    return Lexer(rest)._word().parts


def _words_of(body: str) -> list[Word]:
    lex = Lexer(body)
    out = []
    for t in lex.tokens():
        if t.kind == "word":
            out.append(t.value)  # type: ignore[arg-type]
    return out  # type: ignore[return-value]


def _dq_parts(text: str) -> list[WordPart]:
    lex = Lexer(text)
    parts: list[WordPart] = []
    lex.s = text + '"'
    lex._dquoted(parts)
    return parts


def _drop_prefix(v: Value, n: int) -> Value:
    """`NAME=value` passed to export/declare as an expanded word: the value after the first n characters."""
    parts = list(v.parts)
    out: list[Part] = []
    skip = n
    for p in parts:
        if skip <= 0:
            out.append(p)
        elif p.known and len(p.text) > skip:
            out.append(Part(p.text[skip:], alias=p.alias, first=p.first))
            skip = 0
        elif p.known:
            skip -= len(p.text)
        else:
            out.append(p)
            skip = 0
    return Value(_merge(tuple(out)))


def _shell_c(args: list[Value]) -> Value | None:
    """The command string of `bash -c STR` / `sh -xeuc STR`."""
    for i, a in enumerate(args):
        t = a.text
        if t is None:
            return None
        if t.startswith("-") and not t.startswith("--") and "c" in t[1:]:
            return args[i + 1] if i + 1 < len(args) else None
        if not t.startswith("-") and not t.startswith("+"):
            return None
    return None


def walk_script(path: str, text: str, budget_s: float | None = None) -> list[Command]:
    """The commands a script would run. Raises ShellBudget for a script past the reader's budgets (nesting depth,
    time: TIME_BUDGET_S unless given)."""
    return Walker(path, TIME_BUDGET_S if budget_s is None else budget_s).run(text)

