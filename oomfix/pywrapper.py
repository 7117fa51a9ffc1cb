"""Python wrappers read, never run: the torchrun (or llamafactory-cli, accelerate, deepspeed) command a Python
script builds, with its process count and master port, by reading its `ast` (oomfix/launcher.py asks, for a
`python x.py` command, whether x.py is a wrapper).
"""
from __future__ import annotations

import ast
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from oomfix.shell import Value

_CALLS_LAUNCHER = re.compile(r"""["'](?:torchrun|llamafactory-cli|deepspeed)["']|torch\.distributed\.(?:run|launch)|"""
                             r"""["']accelerate["']\s*,\s*["']launch|accelerate launch|torchrun |submitit""")


@dataclass(frozen=True)
class WrapperInfo:
    path: str
    nproc: int | None = None
    port: str = "default"
    reads_master_port: bool = False
    nproc_from_visible: bool = False
    submits: bool = False  # submitit / sbatch: runs under the scheduler


def wrapper_info(path: str, env: dict[str, Value]) -> WrapperInfo | None:
    """Read a Python script (never run it): the launcher command it builds, with `os.environ.get("X", d)` taken
    from the job's environment, and `len(os.environ["CUDA_VISIBLE_DEVICES"].split(","))` as the GPU count."""
    try:
        return _wrapper_info(path, env)
    except (RecursionError, MemoryError):
        return None  # a pathologically nested script: not a wrapper this reader can follow


def _wrapper_info(path: str, env: dict[str, Value]) -> WrapperInfo | None:
    try:
        if os.path.getsize(path) > 2_000_000:
            return None
        src = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    if not _CALLS_LAUNCHER.search(src):
        return None
    try:
        tree: ast.Module | None = ast.parse(src)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        tree = None
    src = _code_only(src, tree)  # a docstring or comment that shows a torchrun example is not a command
    if not _CALLS_LAUNCHER.search(src):
        return None
    info: dict[str, Any] = {"path": path, "submits": "submitit" in src or "sbatch" in src}
    names: dict[str, ast.expr] = {}
    lists: list[list[ast.expr]] = []
    funcs: dict[str, str] = {}
    env_sets: dict[str, ast.expr] = {}  # env["K"] = v / os.environ["K"] = v: the environment the launcher gets
    if tree is not None:
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef):
                funcs[node.name] = ast.unparse(node)
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                names.setdefault(node.targets[0].id, node.value)
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and \
                    isinstance(node.targets[0], ast.Subscript) and isinstance(node.targets[0].slice, ast.Constant) \
                    and isinstance(node.targets[0].slice.value, str) and \
                    _is_environ(node.targets[0].value, names):
                env_sets.setdefault(node.targets[0].slice.value, node.value)
            if isinstance(node, ast.List) and node.elts and _is_launch_list(node.elts):
                lists.append(node.elts)
    visible = env.get("CUDA_VISIBLE_DEVICES")

    def ev(e: ast.expr, depth: int = 0) -> object:
        if depth > 8:
            return None
        if isinstance(e, ast.Constant):
            return e.value
        if isinstance(e, ast.Name):
            return ev(names[e.id], depth + 1) if e.id in names else None
        if isinstance(e, ast.Call):
            f = ast.unparse(e.func)
            if f in ("str", "int") and e.args:
                v = ev(e.args[0], depth + 1)
                try:
                    return None if v is None else (str(v) if f == "str" else int(v))  # type: ignore[call-overload]
                except (TypeError, ValueError):
                    return None
            if e.args and isinstance(e.func, ast.Attribute) and e.func.attr == "split" and \
                    isinstance(ev(e.func.value, depth + 1), str):
                sep = ev(e.args[0], depth + 1)
                return str(ev(e.func.value, depth + 1)).split(sep if isinstance(sep, str) else None)
            if e.args and (f in ("os.environ.get", "os.getenv") or (
                    isinstance(e.func, ast.Attribute) and e.func.attr == "get" and _is_environ(e.func.value, names))):
                key = ev(e.args[0], depth + 1)
                if isinstance(key, str):
                    if key == "MASTER_PORT":
                        info["reads_master_port"] = True
                    val = env.get(key)
                    if val is not None:
                        return val.text
                    return ev(e.args[1], depth + 1) if len(e.args) > 1 else None
            if f == "len" and e.args:
                inner = ast.unparse(e.args[0])
                inner += "".join(" " + ast.unparse(names[n.id]) for n in ast.walk(e.args[0])
                                 if isinstance(n, ast.Name) and n.id in names)
                if "CUDA_VISIBLE_DEVICES" in inner and "split" in inner:
                    info["nproc_from_visible"] = True
                    if visible is not None and visible.text:
                        return len([x for x in visible.text.split(",") if x.strip()])
                    if visible is not None:
                        return None
                v = ev(e.args[0], depth + 1)  # unset in the job's environment: the wrapper's own default
                return len(v) if isinstance(v, (list, str)) else None
        if isinstance(e, ast.Subscript) and _is_environ(e.value, names):
            key = ev(e.slice, depth + 1)
            if isinstance(key, str) and key in env_sets:
                return ev(env_sets[key], depth + 1)
            if isinstance(key, str) and env.get(key) is not None:
                return env[key].text
        if isinstance(e, ast.JoinedStr):
            out = []
            for v in e.values:
                x = ev(v.value if isinstance(v, ast.FormattedValue) else v, depth + 1)
                if x is None:
                    return None
                out.append(str(x))
            return "".join(out)
        return None

    for elts in lists:
        vals = [ev(x) for x in elts]
        if vals and vals[0] == "llamafactory-cli":
            # LLaMA-Factory's launcher (src/llamafactory/launcher.py launch()): torchrun with NPROC_PER_NODE
            # processes (default: the device count) on MASTER_PORT, else a free port it finds itself
            wenv = {k: ev(v) for k, v in env_sets.items()}
            n = wenv.get("NPROC_PER_NODE")
            n = n if n is not None else (env["NPROC_PER_NODE"].text if env.get("NPROC_PER_NODE") else None)
            if isinstance(n, (int, str)) and str(n).strip().isdigit():
                info["nproc"] = int(str(n).strip())
            info["reads_master_port"] = "MASTER_PORT" not in env_sets
            mp = wenv.get("MASTER_PORT")
            info["port"] = (str(mp) if str(mp).isdigit() else "unknown") if "MASTER_PORT" in env_sets else "free"
            continue
        for i, v in enumerate(vals):
            nxt = vals[i + 1] if i + 1 < len(vals) else None
            if not isinstance(v, str):
                continue
            key, eq, val = v.partition("=")
            arg = val if eq else nxt
            if key in ("--nproc_per_node", "--nproc-per-node", "--num_processes", "--num_gpus"):
                try:
                    info["nproc"] = int(str(arg)) if arg is not None else None
                except ValueError:
                    pass
            if key in ("--master_port", "--master-port", "--main_process_port"):
                info["port"] = str(arg) if arg is not None and str(arg).isdigit() else "unknown"
                src_e = elts[i + 1] if not eq and i + 1 < len(elts) else elts[i]
                if "MASTER_PORT" in ast.unparse(src_e):
                    info["reads_master_port"] = True
                if info["port"] == "unknown":
                    info["port"] = _computed_port(src_e, funcs)
    if not lists:
        m = re.search(r"""--nproc[_-]per[_-]node["']?\s*[,= ]\s*["']?(\d+)""", src)
        if m:
            info["nproc"] = int(m.group(1))
        m = re.search(r"""--master[_-]port["']?\s*[,= ]\s*["']?(\d+)""", src)
        if m:
            info["port"] = m.group(1)
    return WrapperInfo(**info)


def _is_environ(e: ast.expr, names: dict[str, ast.expr]) -> bool:
    """`os.environ`, or a name bound to a copy of it (`env = dict(os.environ)`, `os.environ.copy()`)."""
    if ast.unparse(e) == "os.environ":
        return True
    if isinstance(e, ast.Name) and e.id in names:
        v = ast.unparse(names[e.id]).replace(" ", "")
        return v in ("dict(os.environ)", "os.environ.copy()", "{**os.environ}", "copy.copy(os.environ)",
                     "copy.deepcopy(os.environ)")
    return False


def _code_only(src: str, tree: ast.Module | None) -> str:
    """The source without comments and docstrings (a string that is a statement of its own): text that shows a
    command, not code that runs one."""
    import io
    import tokenize

    doc_lines: set[int] = set()
    if tree is not None:
        for node in ast.walk(tree):
            if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and \
                    isinstance(node.value.value, str):
                doc_lines.update(range(node.lineno, (node.end_lineno or node.lineno) + 1))
    lines = src.splitlines(keepends=True)
    try:
        for tok in tokenize.generate_tokens(io.StringIO(src).readline):
            if tok.type == tokenize.COMMENT:
                r, c = tok.start
                ln = lines[r - 1]
                lines[r - 1] = ln[:c] + " " * (len(ln.rstrip("\r\n")) - c) + ln[len(ln.rstrip("\r\n")):]
    except (tokenize.TokenError, IndentationError, SyntaxError, IndexError):
        lines = [re.sub(r"^\s*#.*", "", ln) for ln in lines]
    return "".join("\n" if k + 1 in doc_lines else ln for k, ln in enumerate(lines))


def _computed_port(e: ast.expr, funcs: dict[str, str]) -> str:
    """A port the wrapper computes: a socket bound to port 0 hands out a free one ("free"); `random` picks one
    ("random"); anything else the text cannot tell."""
    text = ast.unparse(e)
    for call in re.findall(r"([A-Za-z_][A-Za-z0-9_]*)\(", text):
        text += "\n" + funcs.get(call, "")
    if re.search(r"\.bind\(\s*\(\s*['\"][^'\"]*['\"]\s*,\s*0\s*\)", text):
        return "free"
    if "random" in text:
        return "random"
    return "unknown"


def _is_launch_list(elts: list[ast.expr]) -> bool:
    heads = [e.value for e in elts[:4] if isinstance(e, ast.Constant) and isinstance(e.value, str)]
    return bool(heads) and (heads[0] in ("torchrun", "deepspeed", "accelerate", "llamafactory-cli") or
                            "torch.distributed.run" in heads or "torch.distributed.launch" in heads)
