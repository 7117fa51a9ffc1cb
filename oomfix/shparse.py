"""Shell syntax for the launcher reader (oomfix/shell.py): a lexer and a parser for the bash a launcher script is
written in, never a shell that runs it.

Words keep their parts (literal, quoted, `$NAME`/`${...}`, `$(...)`, `$((...))`) so that the reader can expand what
is known and keep the rest as written; every word and command carries its line. Statements that do not parse are
skipped to the next line, so one odd construct never hides the jobs of the rest of the script.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

# --- lexer ------------------------------------------------------------------------------------------------------

# word parts: ("lit", s, quoted) | ("param", raw, quoted) | ("cmd", src, raw, quoted) | ("arith", src, raw, quoted)
WordPart = tuple


@dataclass(frozen=True)
class Word:
    parts: tuple[WordPart, ...]
    raw: str
    line: int

    @property
    def plain(self) -> str | None:
        """The word's text when it is a bare unquoted literal (reserved words, function names)."""
        if len(self.parts) == 1 and self.parts[0][0] == "lit" and not self.parts[0][2]:
            return self.parts[0][1]
        if not self.parts:
            return None
        return None


@dataclass(frozen=True)
class Tok:
    kind: str  # word | op | nl | eof | heredoc
    value: object
    line: int
    io_number: bool = False  # digits written right against `<`/`>` (`2>`): bash reads them as a file descriptor


_OPS = ("&&", "||", ";;&", ";;", ";&", "|&", "&>>", "&>", ">>", "<<<", "<<-", "<<", ">&", "<&", ">|", "<>", "|", "&",
        ";", "(", ")", "<", ">")
_META = set(" \t\n;&|<>()")
# `<NAME>` with nothing a file name would have around it: a placeholder in a template script, not a redirection
_PLACEHOLDER = re.compile(r"<[^\s<>;&|()'\"$/.]+>")


class ParseError(Exception):
    pass


class ShellBudget(Exception):
    """A script past what this reader will spend on one file (nesting depth, time, size): refused whole, with the
    reason, never read for minutes or into gigabytes."""


MAX_NESTING = 100  # compound commands inside one another; real launchers nest a handful


class Lexer:
    def __init__(self, src: str, line0: int = 1) -> None:
        self.s = src
        self.i = 0
        self.line = line0
        self.pending_heredocs: list[tuple[str, bool, bool]] = []  # (delimiter, strip tabs, expand)
        self.heredoc_bodies: list[tuple[str, bool]] = []

    def _c(self, k: int = 0) -> str:
        j = self.i + k
        return self.s[j] if j < len(self.s) else ""

    def _adv(self, n: int = 1) -> str:
        t = self.s[self.i:self.i + n]
        self.line += t.count("\n")
        self.i += n
        return t

    def tokens(self) -> list[Tok]:
        out: list[Tok] = []
        while True:
            t = self.next()
            out.append(t)
            if t.kind == "eof":
                return out

    def next(self) -> Tok:
        while True:
            c = self._c()
            if c in (" ", "\t", "\r"):
                self._adv()
            elif c == "\\" and self._c(1) == "\n":
                self._adv(2)
            elif c == "#":
                while self._c() and self._c() != "\n":
                    self._adv()
            else:
                break
        if not self._c():
            return Tok("eof", None, self.line)
        line = self.line
        c = self._c()
        if c == "\n":
            self._adv()
            if self.pending_heredocs:
                self._read_heredocs()
            return Tok("nl", None, line)
        if c == "(" and self._c(1) == "(":
            # an arithmetic command ((...)): one opaque word
            depth, j = 0, self.i
            while j < len(self.s):
                if self.s[j] == "(":
                    depth += 1
                elif self.s[j] == ")":
                    depth -= 1
                    if depth == 0:
                        break
                j += 1
            raw = self._adv(j + 1 - self.i)
            return Tok("word", Word((("arith", raw[2:-2], raw, False),), raw, line), line)
        if _PLACEHOLDER.match(self.s, self.i):
            return Tok("word", self._word(), line)  # `<GPU-0-IP>`: a template placeholder left unfilled
        for op in _OPS:
            if self.s.startswith(op, self.i):
                self._adv(len(op))
                if op in ("<<", "<<-"):
                    while self._c() in (" ", "\t"):
                        self._adv()
                    delim_word = self._word()
                    delim = "".join(str(p[1]) if p[0] == "lit" else str(p[-2]) for p in delim_word.parts)
                    quoted = any(p[0] == "lit" and p[2] for p in delim_word.parts) or "\\" in delim_word.raw
                    self.pending_heredocs.append((delim, op == "<<-", not quoted))
                    return Tok("heredoc", (op, len(self.heredoc_bodies) + len(self.pending_heredocs) - 1), line)
                return Tok("op", op, line)
        w = self._word()
        # bash takes a number as a redirection's file descriptor only when it touches the operator (`2>x`);
        # `--epochs 7 > x.log` passes 7 as an argument and sends stdout to x.log
        io = w.raw.isdigit() and self._c() in ("<", ">")
        return Tok("word", w, line, io)

    def _read_heredocs(self) -> None:
        for delim, strip, expand in self.pending_heredocs:
            body: list[str] = []
            while self.i < len(self.s):
                end = self.s.find("\n", self.i)
                end = len(self.s) if end < 0 else end
                ln = self.s[self.i:end]
                self._adv(end - self.i + (1 if end < len(self.s) else 0))
                cmp = ln.lstrip("\t") if strip else ln
                if cmp.rstrip("\r") == delim:
                    break
                body.append(cmp)
            self.heredoc_bodies.append(("\n".join(body) + "\n", expand))
        self.pending_heredocs = []

    def _word(self) -> Word:
        start, line = self.i, self.line
        parts: list[WordPart] = []
        buf: list[str] = []

        def flush(quoted: bool = False) -> None:
            if buf:
                parts.append(("lit", "".join(buf), quoted))
                buf.clear()

        while True:
            c = self._c()
            if c == "<" and _PLACEHOLDER.match(self.s, self.i):
                m = _PLACEHOLDER.match(self.s, self.i)
                assert m
                buf.append(self._adv(m.end() - self.i))
                continue
            if not c or c in _META:
                # NAME=( array literal )
                if c == "(" and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\[[^\]]*\])?\+?=", self.s[start:self.i]):
                    flush()
                    raw = self._balanced("(", ")")
                    parts.append(("array", raw[1:-1], raw, False))
                    continue
                break
            if c == "\\":
                nxt = self._c(1)
                self._adv(2)
                if nxt != "\n":
                    buf.append(nxt)
                continue
            if c == "'":
                flush()
                self._adv()
                j = self.s.find("'", self.i)
                j = len(self.s) if j < 0 else j
                parts.append(("lit", self.s[self.i:j], True))
                self._adv(j - self.i + 1)
                continue
            if c == "$" and self._c(1) == "'":
                flush()
                self._adv(2)
                out = []
                while self._c() and self._c() != "'":
                    if self._c() == "\\":
                        e = self._c(1)
                        out.append({"n": "\n", "t": "\t", "'": "'", "\\": "\\"}.get(e, "\\" + e))
                        self._adv(2)
                    else:
                        out.append(self._adv())
                self._adv()
                parts.append(("lit", "".join(out), True))
                continue
            if c == '"':
                flush()
                self._adv()
                self._dquoted(parts)
                continue
            if c == "$" or c == "`":
                p = self._dollar(False)
                if p is not None:
                    flush()
                    parts.append(p)
                    continue
                buf.append(self._adv())
                continue
            buf.append(self._adv())
        flush()
        return Word(tuple(parts), self.s[start:self.i], line)

    def _dquoted(self, parts: list[WordPart]) -> None:
        buf: list[str] = []
        while True:
            c = self._c()
            if not c:
                break
            if c == '"':
                self._adv()
                break
            if c == "\\" and self._c(1) in ('"', "\\", "$", "`", "\n"):
                nxt = self._c(1)
                self._adv(2)
                if nxt != "\n":
                    buf.append(nxt)
                continue
            if c in "$`":
                p = self._dollar(True)
                if p is not None:
                    if buf:
                        parts.append(("lit", "".join(buf), True))
                        buf = []
                    parts.append(p)
                    continue
            buf.append(self._adv())
        parts.append(("lit", "".join(buf), True))

    def _balanced(self, open_: str, close: str) -> str:
        """From an opening bracket to its match, skipping quoted text. Returns the raw text, brackets included."""
        start = self.i
        depth = 0
        while self.i < len(self.s):
            c = self._c()
            if c == "\\":
                self._adv(2)
                continue
            if c == "'" and open_ != "{":
                j = self.s.find("'", self.i + 1)
                self._adv((len(self.s) if j < 0 else j) + 1 - self.i)
                continue
            if c == '"':
                self._adv()
                while self._c() and self._c() != '"':
                    self._adv(2 if self._c() == "\\" else 1)
                self._adv()
                continue
            if c == open_:
                depth += 1
            elif c == close:
                depth -= 1
                if depth == 0:
                    self._adv()
                    return self.s[start:self.i]
            self._adv()
        return self.s[start:self.i]

    def _dollar(self, quoted: bool) -> WordPart | None:
        c, n = self._c(), self._c(1)
        if c == "`":
            start = self.i
            self._adv()
            while self._c() and self._c() != "`":
                self._adv(2 if self._c() == "\\" else 1)
            self._adv()
            raw = self.s[start:self.i]
            return ("cmd", raw[1:-1].replace("\\`", "`"), raw, quoted)
        if n == "(" and self._c(2) == "(":
            start = self.i
            self._adv()
            raw = "$" + self._balanced("(", ")")
            return ("arith", raw[3:-2], self.s[start:self.i], quoted)
        if n == "(":
            start = self.i
            self._adv()
            self._balanced("(", ")")
            raw = self.s[start:self.i]
            return ("cmd", raw[2:-1], raw, quoted)
        if n == "{":
            start = self.i
            self._adv()
            self._balanced("{", "}")
            raw = self.s[start:self.i]
            return ("param", raw, quoted)
        m = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*|[0-9@*#?$!-])").match(self.s, self.i)
        if m:
            self._adv(m.end() - self.i)
            return ("param", m.group(0), quoted)
        return None


# --- parser -----------------------------------------------------------------------------------------------------

@dataclass
class Redir:
    fd: str  # "1", "2", "&" (both), "0"
    op: str
    target: Word | None
    heredoc: int | None = None


@dataclass
class Simple:
    assigns: list[Word]
    words: list[Word]
    redirs: list[Redir]
    line: int
    end_line: int


@dataclass
class Node:
    kind: str  # list | andor | pipeline | if | for | while | until | case | group | subshell | func | select
    items: list = field(default_factory=list)
    redirs: list[Redir] = field(default_factory=list)
    line: int = 0
    extra: object = None


_RESERVED_STOP = {"then", "elif", "else", "fi", "do", "done", "esac", "}"}


class Parser:
    def __init__(self, toks: list[Tok], bodies: list[tuple[str, bool]]) -> None:
        self.t = toks
        self.i = 0
        self.bodies = bodies
        self.nesting = 0

    def peek(self, k: int = 0) -> Tok:
        return self.t[min(self.i + k, len(self.t) - 1)]

    def adv(self) -> Tok:
        t = self.peek()
        self.i += 1
        return t

    def _is_word(self, tok: Tok, *vals: str) -> bool:
        return tok.kind == "word" and isinstance(tok.value, Word) and tok.value.plain in vals

    def _is_op(self, tok: Tok, *vals: str) -> bool:
        return tok.kind == "op" and tok.value in vals

    def skip_nl(self) -> None:
        while self.peek().kind == "nl" or self._is_op(self.peek(), ";"):
            self.adv()

    def program(self) -> Node:
        """Top level: statements one by one; a statement that does not parse is skipped to the next line."""
        items = []
        while self.peek().kind != "eof":
            self.skip_nl()
            if self.peek().kind == "eof":
                break
            start = self.i
            try:
                items.extend(self.list_(stop=set(), top=True).items)
                if self.i == start:
                    raise ParseError(f"unexpected {self.peek().value!r}")  # a stray `)`, `fi`, `;;`: skip its line
            except (ParseError, IndexError, RecursionError):
                self.i = start + 1
                while self.peek().kind not in ("nl", "eof"):
                    self.adv()
        return Node("list", items)

    def list_(self, stop: set[str], top: bool = False) -> Node:
        if self.nesting > MAX_NESTING:
            raise ShellBudget(f"compound commands nested more than {MAX_NESTING} deep")
        self.nesting += 1
        try:
            return self._list(stop, top)
        finally:
            self.nesting -= 1

    def _list(self, stop: set[str], top: bool = False) -> Node:
        items: list[tuple[Node, bool]] = []  # (and-or list, background)
        while True:
            self.skip_nl() if not top or not items else None
            tok = self.peek()
            if tok.kind == "eof" or (tok.kind == "word" and isinstance(tok.value, Word) and tok.value.plain in stop):
                break
            if self._is_op(tok, ")", ";;", ";&", ";;&"):
                break
            ao = self.and_or()
            bg = False
            if self._is_op(self.peek(), "&"):
                self.adv()
                bg = True
            elif self._is_op(self.peek(), ";"):
                self.adv()
            items.append((ao, bg))
            if top and self.peek().kind in ("nl", "eof"):
                break
        return Node("list", items)

    def and_or(self) -> Node:
        parts = [("", self.pipeline())]
        while self._is_op(self.peek(), "&&", "||"):
            op = str(self.adv().value)
            while self.peek().kind == "nl":
                self.adv()
            parts.append((op, self.pipeline()))
        return Node("andor", parts)

    def pipeline(self) -> Node:
        neg = False
        if self._is_word(self.peek(), "!"):
            self.adv()
            neg = True
        if self._is_word(self.peek(), "time"):
            self.adv()
        cmds = [self.command()]
        while self._is_op(self.peek(), "|", "|&"):
            self.adv()
            while self.peek().kind == "nl":
                self.adv()
            cmds.append(self.command())
        return Node("pipeline", cmds, extra=neg)

    def command(self) -> Node | Simple:
        tok = self.peek()
        if tok.kind == "word":
            w = tok.value
            assert isinstance(w, Word)
            p = w.plain
            if p == "if":
                return self._redirs(self.if_())
            if p in ("for", "select"):
                return self._redirs(self.for_())
            if p in ("while", "until"):
                return self._redirs(self.while_())
            if p == "case":
                return self._redirs(self.case_())
            if p == "{":
                self.adv()
                body = self.list_({"}"})
                self.expect_word("}")
                return self._redirs(Node("group", [body], line=tok.line))
            if p == "function":
                self.adv()
                name = self.adv().value
                assert isinstance(name, Word)
                if self._is_op(self.peek(), "("):
                    self.adv()
                    self.expect_op(")")
                self.skip_nl()
                return Node("func", [self.command()], line=tok.line, extra=(name.plain or name.raw).rstrip("()"))
            if p == "[[":
                return self._dbracket()
            if self._is_op(self.peek(1), "(") and self._is_op(self.peek(2), ")") and p:
                self.adv(), self.adv(), self.adv()
                self.skip_nl()
                return Node("func", [self.command()], line=tok.line, extra=p)
        if self._is_op(tok, "("):
            self.adv()
            body = self.list_(set())
            self.expect_op(")")
            return self._redirs(Node("subshell", [body], line=tok.line))
        return self.simple()

    def _dbracket(self) -> Simple:
        first = self.adv()
        words = [first.value]
        while not self._is_word(self.peek(), "]]") and self.peek().kind != "eof":
            t = self.adv()
            if t.kind == "word":
                words.append(t.value)
        if self.peek().kind != "eof":
            words.append(self.adv().value)
        return Simple([], words, [], first.line, first.line)  # type: ignore[arg-type]

    def expect_word(self, w: str) -> None:
        if not self._is_word(self.peek(), w):
            raise ParseError(f"expected {w}")
        self.adv()

    def expect_op(self, o: str) -> None:
        if not self._is_op(self.peek(), o):
            raise ParseError(f"expected {o}")
        self.adv()

    def _redirs(self, node: Node) -> Node:
        while True:
            r = self._redir()
            if r is None:
                return node
            node.redirs.append(r)

    def _redir(self) -> Redir | None:
        tok = self.peek()
        fd = None
        if tok.kind == "word" and tok.io_number and isinstance(tok.value, Word) and \
                (self._is_op(self.peek(1), ">", ">>", "<", ">&", "<&", ">|", "<>") or self.peek(1).kind == "heredoc"):
            fd = tok.value.raw  # only an IO number when written right against the operator: `2>`, not `2 >`
            self.adv()
            tok = self.peek()
        if tok.kind == "heredoc":
            self.adv()
            _op, idx = tok.value  # type: ignore[misc]
            return Redir(fd or "0", "<<", None, idx)
        if tok.kind == "op" and tok.value in (">", ">>", "<", ">&", "<&", ">|", "<>", "&>", "&>>", "<<<"):
            self.adv()
            tgt = self.adv()
            if tgt.kind != "word":
                raise ParseError("redirection without a target")
            op = str(tok.value)
            default = "0" if op in ("<", "<&", "<>", "<<<") else ("&" if op in ("&>", "&>>") else "1")
            return Redir(fd or default, op, tgt.value)  # type: ignore[arg-type]
        return None

    def simple(self) -> Simple:
        assigns: list[Word] = []
        words: list[Word] = []
        redirs: list[Redir] = []
        line = self.peek().line
        end = line
        while True:
            r = self._redir()
            if r is not None:
                redirs.append(r)
                continue
            tok = self.peek()
            if tok.kind != "word":
                break
            w = tok.value
            assert isinstance(w, Word)
            self.adv()
            end = tok.line
            if not words and re.match(r"[A-Za-z_][A-Za-z0-9_]*(\[[^\]]*\])?\+?=", w.raw):
                assigns.append(w)
            else:
                words.append(w)
        if not assigns and not words and not redirs:
            raise ParseError(f"unexpected {self.peek().value!r}")
        return Simple(assigns, words, redirs, line, max(end, self.peek().line - 1 if self.peek().kind == "nl" else end))

    def if_(self) -> Node:
        line = self.adv().line
        clauses = []
        cond = self.list_({"then"})
        self.expect_word("then")
        body = self.list_({"elif", "else", "fi"})
        clauses.append((cond, body))
        while True:
            if self._is_word(self.peek(), "elif"):
                self.adv()
                cond = self.list_({"then"})
                self.expect_word("then")
                clauses.append((cond, self.list_({"elif", "else", "fi"})))
            elif self._is_word(self.peek(), "else"):
                self.adv()
                clauses.append((None, self.list_({"fi"})))
            else:
                break
        self.expect_word("fi")
        return Node("if", clauses, line=line)

    def for_(self) -> Node:
        line = self.adv().line
        if self.peek().kind == "word" and str(getattr(self.peek().value, "raw", "")).startswith("(("):
            self.adv()  # for (( ...; ...; ... )): the loop variable is arithmetic, the body runs once here
            var, words = None, None
        else:
            var_w = self.adv().value
            var = var_w.plain if isinstance(var_w, Word) else None
            words = None
            while self.peek().kind == "nl":
                self.adv()
            if self._is_word(self.peek(), "in"):
                self.adv()
                words = []
                while self.peek().kind == "word":
                    words.append(self.adv().value)
        self.skip_nl()
        if self._is_word(self.peek(), "{"):
            self.adv()
            body = self.list_({"}"})
            self.expect_word("}")
        else:
            self.expect_word("do")
            body = self.list_({"done"})
            self.expect_word("done")
        return Node("for", [body], line=line, extra=(var, words))

    def while_(self) -> Node:
        tok = self.adv()
        cond = self.list_({"do"})
        self.expect_word("do")
        body = self.list_({"done"})
        self.expect_word("done")
        return Node("while" if tok.value.plain == "while" else "until", [cond, body], line=tok.line)  # type: ignore[union-attr]

    def case_(self) -> Node:
        line = self.adv().line
        subject = self.adv().value
        while self.peek().kind == "nl":
            self.adv()
        self.expect_word("in")
        items = []
        while True:
            self.skip_nl()
            if self._is_word(self.peek(), "esac") or self.peek().kind == "eof":
                break
            if self._is_op(self.peek(), "("):
                self.adv()
            pats = []
            while True:
                t = self.adv()
                if t.kind == "word":
                    pats.append(t.value)
                if self._is_op(self.peek(), "|"):
                    self.adv()
                    continue
                break
            self.expect_op(")")
            body = self.list_({"esac"})
            if self._is_op(self.peek(), ";;", ";&", ";;&"):
                self.adv()
            items.append((pats, body))
        self.expect_word("esac")
        return Node("case", items, line=line, extra=subject)


def parse(src: str, line0: int = 1) -> tuple[Node, list[tuple[str, bool]]]:
    lex = Lexer(src, line0)
    toks = lex.tokens()
    if lex.pending_heredocs:
        lex._read_heredocs()
    return Parser(toks, lex.heredoc_bodies).program(), lex.heredoc_bodies
