"""The symbolic values and state a walk of a shell script works on.

A `Value` is a word as far as the text determines it: known parts, and unknown parts (`$(date ...)`, `$RANDOM`,
positional arguments, the environment, a variable that two branches of an `if` set differently) that are never
guessed. An unknown piece keeps the text it was written as (`${TS}`), so a log path with unknown parts is still a
pattern; a name the script gave an unknown value is shown by that name (`$gpu`, not `$4`). `State` holds the
variables, exported names, working directory, arguments and functions; `Ctx` the context of the commands being
emitted; `Command` is one simple command the script would run, as the walker reports it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from oomfix.shparse import Node

MAX_VALUE = 1 << 20  # characters of one known value: no real path or command line comes near
MAX_PARTS = 512  # known and unknown pieces of one value

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


def _join(vals: list[Value]) -> list[Value]:
    out: list[Value] = []
    for k, v in enumerate(vals):
        if k:
            out.append(Value.lit(" "))
        out.append(v)
    return out


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


# --- the walk's commands and state ------------------------------------------------------------------------------

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
