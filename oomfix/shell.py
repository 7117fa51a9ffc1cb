"""Read a shell script the way bash would run it, without running anything.

The reader parses the script (quotes, `${...}`, `$(...)`, here-docs, `if`/`case`/`for`/`while`, functions) and walks
it with a symbolic state: variables (assignments, `export`, `local`, `${VAR:-d}`, `${VAR:=d}`, arrays), the working
directory (`cd`, `$(dirname "$0")`, `${BASH_SOURCE[0]%/*}`), function calls and command strings (`eval`, `$cmd`,
`"${cmd[@]}"`, `bash -c`, `tmux`, `screen`, `srun`, `ssh`). Every simple command it would execute comes out as a
`Command`: its words after expansion, its environment, redirections, the line it starts on in the script file, and
the wrappers it sits inside.

This module holds the walk itself (statements, branches, loops, functions, assignments, builtins). Its parts:
`oomfix.shparse` parses, `oomfix.shvalues` holds the symbolic values and state (what stays unknown, and how it is
shown), `oomfix.shexpand` expands words, `oomfix.shwrap` finds the command inside wrappers and other script files.
"""
from __future__ import annotations

import fnmatch
import os
import posixpath
import re
import time
from dataclasses import replace

from oomfix.shexpand import Expander, bash_random
from oomfix.shparse import Lexer, Node, ParseError, Redir, ShellBudget, Simple, Word, WordPart, parse
from oomfix.shvalues import _NEVER, Command, Ctx, Part, State, Value, _drop_prefix, _join, concat
from oomfix.shwrap import Wrappers

# names other modules import from here (their homes are the modules above)
__all__ = ["Command", "Part", "Value", "Walker", "bash_random", "walk_script", "_drop_prefix"]

MAX_ITEMS = 4096  # elements of one array (real launchers hold tens)
TIME_BUDGET_S = 10.0  # reading one script (its sourced files and command strings included)


class Walker(Expander, Wrappers):
    """The walk: statements, branches, loops, functions, assignments and builtins, emitting a `Command` for every
    simple command. Expansion (`Expander`) and wrappers and script files (`Wrappers`) are its mixins."""

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

    def run(self, src: str) -> list[Command]:
        st = State(vars={"0": Value.lit(self.path), "BASH_SOURCE": [Value.lit(self.path)]}, exported=set(), cwd=None,
                   cwd_rel=".", positional=None, funcs={})
        node, bodies = parse(src)
        ctx = Ctx(bodies=bodies)
        for item in node.items:
            try:
                self.exec_node(Node("list", [item]), st, ctx)
            except (re.error, ValueError, TypeError, IndexError, KeyError, AttributeError, RecursionError):
                continue  # a construct this reader gets wrong costs that statement, never the whole script
        return self.out

    # --- execution -------------------------------------------------------------------------------------------

    def exec_node(self, node: Node | Simple, st: State, ctx: Ctx) -> None:
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

    def _cond_value(self, cond: Node | Simple, st: State, ctx: Ctx) -> bool | None:
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

    def _case_match(self, s: str, pat: Word, st: State, ctx: Ctx) -> bool:
        p = self.word_value(pat, st, ctx).text
        if p is None:
            return False
        return fnmatch.fnmatchcase(s, p.strip("\"'"))

    def _branches(self, clauses: list[tuple[Node | None, Node]], st: State, ctx: Ctx,
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

    def _redirs(self, redirs: list[Redir], st: State, ctx: Ctx) -> list[tuple[str, str, Value]]:
        out = []
        for r in redirs:
            if r.target is None:
                continue
            out.append((r.fd, r.op, self.word_value(r.target, st, ctx)))
        return out

    def _assign_word(self, w: Word, st: State, ctx: Ctx, name_it: bool = True) -> tuple[str, object] | None:
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

    def exec_simple(self, cmd: Simple, st: State, ctx: Ctx) -> None:
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

    def _declare(self, words: list[Word], st: State, ctx: Ctx) -> None:
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

    def emit(self, argv: list[Value], prefix: dict[str, Value], st: State, ctx: Ctx) -> None:
        self.seq += 1
        self.out.append(Command(
            argv=tuple(argv), env=self._env(st, prefix), prefix_env=dict(prefix), line=ctx.line or 0,
            end_line=ctx.end_line or ctx.line or 0, background=ctx.background, redirs=ctx.redirs,
            pipeline=ctx.pipeline, index=ctx.pipe_index, via=ctx.via, cwd=st.cwd,
            cwd_rel=st.cwd_rel, remote=ctx.remote, loop_vars=ctx.loop_vars, loop_runs=ctx.loop_runs,
            async_path=ctx.async_path, own_line=ctx.own_line, branches=ctx.branches, seq=self.seq))

    def run_string(self, src: Value | str, st: State, ctx: Ctx, heredoc_bodies: bool = False) -> None:
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

    def dispatch(self, argv: list[Value], prefix: dict[str, Value], st: State, ctx: Ctx,
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


def _named_ref(v: Value) -> bool:
    """An unknown value that is one reference to a named variable (`$gpu`, `${TS}`): already shown by its name."""
    return len(v.parts) == 1 and not v.parts[0].known and \
        re.fullmatch(r"\$(\{[A-Za-z_][A-Za-z0-9_]*([^A-Za-z0-9_].*)?\}|[A-Za-z_][A-Za-z0-9_]*)", v.parts[0].text) is not None


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
