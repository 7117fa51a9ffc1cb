"""Which training jobs a launcher script starts, and how: read with the shell reader (oomfix/shell.py), never run.

A job is a command that ends in torchrun: directly, as `python -m torch.distributed.run|launch`, through
`llamafactory-cli train`, `accelerate launch`, `deepspeed`, or a Python wrapper (a script whose source starts one of
those, a CLI that re-execs itself under torchrun such as `swift sft`). For each job we keep what the pre-relaunch
checks and the launcher fixes need: its environment, whether it runs in the background, what protects it from
SIGHUP, its config, master port, GPUs, process count and log file, and the line it starts on.
"""
from __future__ import annotations

import ast
import functools
import os
import posixpath
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from oomfix.errors import InputError
from oomfix.shell import Command, Value, walk_script
from oomfix.shparse import ShellBudget

MAX_LAUNCHER_BYTES = 4 << 20  # the largest real launcher seen is tens of KB

TORCHRUN_KINDS = ("torchrun", "torch.distributed.launch", "llamafactory-cli", "accelerate", "deepspeed",
                  "python-wrapper")
_PROTECTORS = ("setsid", "tmux", "screen", "systemd-run", "srun", "sbatch", "salloc", "dtach", "disown", "bsub",
               "qsub", "flux", "kubectl", "container-detached")
_CONFIG_EXT = (".yaml", ".yml", ".json")
# CLIs that start torchrun themselves (ms-swift re-execs under torchrun when NPROC_PER_NODE is set; axolotl and
# torchtune's `tune run` wrap accelerate / torchrun)
_WRAPPER_CLIS = {"swift": ("sft", "pt", "rlhf", "train"), "axolotl": ("train",), "tune": ("run",)}
_CALLS_LAUNCHER = re.compile(r"""["'](?:torchrun|llamafactory-cli|deepspeed)["']|torch\.distributed\.(?:run|launch)|"""
                             r"""["']accelerate["']\s*,\s*["']launch|accelerate launch|torchrun |submitit""")
_LAUNCHER_VALUE_OPTS = {
    "--nproc_per_node", "--nproc-per-node", "--nnodes", "--node_rank", "--node-rank", "--master_addr",
    "--master-addr", "--master_port", "--master-port", "--rdzv_endpoint", "--rdzv-endpoint", "--rdzv_backend",
    "--rdzv-backend", "--rdzv_id", "--rdzv-id", "--rdzv_conf", "--rdzv-conf", "--max_restarts", "--max-restarts",
    "--monitor_interval", "--monitor-interval", "--log_dir", "--log-dir", "-r", "--redirects", "-t", "--tee",
    "--local_addr", "--local-addr", "--signals-to-handle", "--signals_to_handle", "--role", "--start_method",
    "--start-method", "--num_processes", "--num_machines", "--machine_rank", "--main_process_ip",
    "--main_process_port", "--config_file", "--gpu_ids", "--mixed_precision", "--deepspeed_config_file",
    "--zero_stage", "--num_cpu_threads_per_process", "--dynamo_backend", "--hostfile", "-H", "--include", "-i",
    "--exclude", "-e", "--num_gpus", "--num_nodes", "--master_port", "--launcher", "--launcher_args", "--module",
    "--local-ranks-filter", "--logs-specs", "--ssh_port", "--bind_cores_to_rank", "--bind_core_list",
}


@dataclass(frozen=True)
class Job:
    file: str
    line: int
    end_line: int
    text: str
    kind: str
    tokens: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    background: bool = False
    nohup: bool = False
    protected_by: str | None = None  # setsid, tmux, a scheduler ...
    signals_to_handle: str | None = None
    config: str | None = None
    master_port: int | None = None
    master_port_explicit: bool = False
    picks_free_port: bool = False
    port: str = "default"  # int as text | default | random | free | unknown
    cuda_visible_devices: str | None = None
    nproc: int | None = None
    nnodes: int | None = None
    node_rank: str | None = None
    rendezvous: str | None = None  # master address:port of a multi-node job, as written
    log: str | None = None
    log_pattern: re.Pattern[str] | None = None
    log_parts: tuple[tuple[str, bool], ...] = ()  # (text, known): the log path, unknown parts as written
    wrapper: str | None = None
    group: int = 0  # jobs between the same two `wait`s
    async_path: tuple[int, ...] = ()  # the `&`-started lists it runs in (see concurrent())
    own_line: int | None = None  # the command's own line when it is not `line` (inside a function body)
    order: int = 0
    remote: str | None = None  # the ssh host it runs on
    cwd: str | None = None  # the directory it runs in, when the script says (absolute)
    cwd_rel: str | None = None  # ... relative to the directory the script was started from
    waited: bool = False  # the script `wait`s for it: it stays in the terminal's foreground process group
    loop_vars: tuple[str, ...] = ()
    loop_runs: int = 1
    gpus_known: bool = True  # False: the GPU set lives in a file this reading cannot see
    branches: tuple[tuple[int, int], ...] = ()  # the if/case branches it is in
    reads_master_port: bool = False  # the port can be set with MASTER_PORT in its environment

    @property
    def world_size(self) -> int | None:
        if self.nproc is not None:
            return self.nproc * (self.nnodes or 1)
        gpus = self.gpus
        if gpus and self.cuda_visible_devices and "$" not in self.cuda_visible_devices:
            return len(gpus)
        return None

    @property
    def gpus(self) -> tuple[str, ...]:
        if not self.cuda_visible_devices or "$" in self.cuda_visible_devices:
            return ()
        return tuple(d.strip() for d in self.cuda_visible_devices.split(",") if d.strip())

    @property
    def hup_safe(self) -> bool:
        if self.protected_by:
            return True
        return self.signals_to_handle is not None and "SIGHUP" not in self.signals_to_handle.upper()

    @property
    def port_json(self) -> int | str | None:
        if self.port.isdigit():
            return int(self.port)
        return self.port if self.port in ("random", "free") else None

    def to_json(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line, "launcher": self.kind, "background": self.background,
                "nohup": self.nohup, "protected_by": self.protected_by, "config": self.config,
                "master_port": self.port_json, "gpus": self.cuda_visible_devices, "nproc": self.nproc,
                "log": self.log}


@dataclass(frozen=True)
class Hazard:
    line: int
    what: str  # the command as written


@dataclass(frozen=True)
class Launcher:
    path: str
    text: str
    jobs: tuple[Job, ...]
    kills: tuple[Hazard, ...] = ()
    sbatch: bool = False


# --- reading one command ----------------------------------------------------------------------------------------

def _t(v: Value) -> str | None:
    return v.text


def _opt(args: list[Value], names: tuple[str, ...]) -> tuple[Value | None, int]:
    """The value of an option (`--x v` or `--x=v`) and its index, or (None, -1). Given twice, the last one counts,
    as argparse stores it (`--master_port=10001 ... --master_port=$mp` runs on $mp)."""
    found: tuple[Value | None, int] = (None, -1)
    i = 0
    while i < len(args):
        t = args[i].show()
        for n in names:
            if t == n and i + 1 < len(args):
                found = (args[i + 1], i)
                i += 1
                break
            if t.startswith(n + "="):
                found = (_drop(args[i], len(n) + 1), i)
                break
        i += 1
    return found


def _drop(v: Value, n: int) -> Value:
    from oomfix.shell import _drop_prefix

    return _drop_prefix(v, n)


def _int(v: Value | None) -> int | None:
    if v is None or v.text is None:
        return None
    t = v.text.strip()
    return int(t) if t.isdigit() else None


def _port_of(v: Value | None) -> str:
    if v is None:
        return "default"
    if v.text is not None:
        t = v.text.strip()
        return str(int(t)) if t.isdigit() else ("free" if t == "0" else "unknown")
    return "random" if v.random else "unknown"


def _endpoint_port(v: Value) -> Value:
    """The port of `host:port` (parts kept: `localhost:${PORT}` is the unknown PORT)."""
    parts = list(v.parts)
    for i in range(len(parts) - 1, -1, -1):
        p = parts[i]
        if p.known and ":" in p.text:
            rest = p.text.rsplit(":", 1)[1]
            from oomfix.shell import Part

            return Value(tuple(([Part(rest)] if rest else []) + parts[i + 1:]))
    return Value.unknown(v.show()) if not v.known else Value.lit("")


def _script_args(kind: str, args: list[Value]) -> tuple[Value | None, list[Value]]:
    """After a launcher's own options: the training script and its arguments."""
    i = 0
    while i < len(args):
        t = args[i].text
        if t is None:
            i += 1
            continue
        if t.startswith("-"):
            if t in ("-m", "--module", "--no_python", "--no-python", "--use_env", "--use-env", "--standalone",
                     "--multi_gpu", "--no-python"):
                if t in ("-m", "--module") and i + 1 < len(args):
                    return args[i + 1], args[i + 2:]
                i += 1
                continue
            key = t.split("=", 1)[0]
            i += 1 if "=" in t or key not in _LAUNCHER_VALUE_OPTS else 2
            continue
        return args[i], args[i + 1:]
    return None, []


def _config_of(args: list[Value], loop_vars: tuple[str, ...] = ()) -> str | None:
    """The training config among a script's arguments: `--config X` (and spellings), else the first positional
    argument that is a config file (`.yaml`, `.yml`, `.json`, or an mmcv-style `configs/....py`). Hydra's
    `--config-path D --config-name N` is D/N.yaml; a loop variable (`for cfg in $(find ...)`) is shown by name."""
    v, _ = _opt(args, ("--config", "--config_file", "--config-file", "--cfg", "--config_path", "--config-path",
                       "--config-dir", "--config_dir", "--train_config", "--yaml"))
    if v is not None:
        name, _ = _opt(args, ("--config-name", "--config_name", "-cn"))
        if name is not None and v.any_known and name.any_known:
            n = name.show()
            return posixpath.join(v.show(), n if n.endswith(_CONFIG_EXT) else n + ".yaml")
        if not v.any_known and re.fullmatch(r"\$\{?(\w+)\}?", v.show()) and \
                re.sub(r"[${}]", "", v.show()) in loop_vars:
            return v.show()
        return v.show() if v.any_known else None
    prev = None
    for a in args:
        t = a.show()
        if prev is not None and prev.startswith("-") and "=" not in prev:
            prev = t
            continue
        prev = t
        if t.startswith("-") or "=" in t:
            continue
        if a.any_known and (t.endswith(_CONFIG_EXT) or (t.endswith(".py") and "config" in t.lower())):
            return t  # a `.py` config is mmcv style: it lives under configs/
    return None


def _resolve_file(p: str, cmd: Command, script_dir: str) -> str | None:
    if os.path.isabs(p):
        return p if os.path.isfile(p) else None
    bases = []
    if cmd.cwd:
        bases.append(cmd.cwd)
    elif cmd.cwd_rel is not None:
        bases.extend(os.path.join(b, cmd.cwd_rel) for b in run_dirs_for(script_dir))
    bases.append(script_dir)
    for b in bases:
        c = os.path.normpath(os.path.join(b, p))
        if os.path.isfile(c):
            return c
    return None


def run_dirs_for(script_dir: str) -> list[str]:
    """Where a script may be run from when it does not `cd`: the current directory, the repository root, the
    script's directory and its ancestors up to that root."""
    d = os.path.abspath(script_dir)
    root = git_root(d)
    out = ([root] if root else []) + [os.getcwd()]
    up = d
    for _ in range(8):  # the ancestors, nearest first (outside git: a few levels, where `bash a/b/x.sh` is run from)
        if up == root or os.path.dirname(up) == up:
            break
        up = os.path.dirname(up)
        out.append(up)
    out.append(d)
    seen: list[str] = []
    for x in out:
        if x not in seen:
            seen.append(x)
    return seen


def clear_caches() -> None:
    for f in (_isdir, git_root, _bases):
        f.cache_clear()


@functools.lru_cache(maxsize=4096)
def _isdir(p: str) -> bool:
    return os.path.isdir(p)


@functools.lru_cache(maxsize=4096)
def git_root(d: str) -> str | None:
    cur = d
    while True:
        if os.path.exists(os.path.join(cur, ".git")):
            return cur
        parent = os.path.dirname(cur)
        if parent == cur:
            return None
        cur = parent


# --- Python wrappers: the torchrun command they build --------------------------------------------------------------

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


# --- a command to a job -------------------------------------------------------------------------------------------

def job_from(cmd: Command, script_dir: str) -> dict[str, Any] | None:
    """Recognise a training job in one command the shell reader found; None if it is something else."""
    argv = list(cmd.argv)
    if not argv or argv[0].text is None:
        return None
    prog = os.path.basename(argv[0].text)
    args = argv[1:]
    texts = [a.text for a in args]
    env = dict(cmd.env)
    kind = None
    wrapper: WrapperInfo | None = None
    cli_args = args
    if prog == "torchrun":
        kind = "torchrun"
    elif prog == "llamafactory-cli" or (prog.startswith("python") and texts[:2] == ["-m", "llamafactory.cli"]):
        kind = "llamafactory-cli"
        cli_args = args[2:] if prog.startswith("python") else args
        if cli_args and cli_args[0].text not in ("train", "sft"):
            return None
    elif prog == "accelerate" and texts[:1] == ["launch"]:
        kind, cli_args = "accelerate", args[1:]
    elif prog == "deepspeed":
        kind = "deepspeed"
    elif prog == "colossalai" and texts[:1] == ["run"]:
        kind, cli_args = "colossalai", args[1:]  # colossalai/cli/launcher: a torchrun command per host
    elif prog in _WRAPPER_CLIS and texts[:1] and texts[0] in _WRAPPER_CLIS[prog]:
        kind, cli_args = "python-wrapper", args[1:]
    elif re.fullmatch(r"python[\d.]*", prog):
        j = 0
        while j < len(args) and (texts[j] or "").startswith("-") and texts[j] != "-m":
            j += 1
        if texts[j:j + 2] in (["-m", "torch.distributed.run"], ["-m", "torch.distributed.launch"]):
            kind = "torchrun" if texts[j + 1] == "torch.distributed.run" else "torch.distributed.launch"
            cli_args = args[j + 2:]
        elif j < len(args) and re.search(r"(^|/)torch/distributed/(run|launch)\.py$", texts[j] or ""):
            # the launcher run by its path (`python $launcher ...`, $launcher = .../torch/distributed/launch.py)
            kind = "torchrun" if (texts[j] or "").endswith("run.py") else "torch.distributed.launch"
            cli_args = args[j + 1:]
        elif j < len(args) and (texts[j] or "").endswith(".py"):
            script = _resolve_file(texts[j] or "", cmd, script_dir)
            cli_args = args[j + 1:]
            if script is not None:
                wrapper = wrapper_info(script, env)
                if wrapper is not None:
                    kind = "python-wrapper"
            elif _launcher_like(cli_args):
                kind = "python-wrapper"  # not in this tree, but its own options say it launches a distributed job
    if kind is None:
        return None
    out: dict[str, Any] = {"kind": kind, "tokens": tuple(a.show() for a in argv),
                           "env": {k: v.show() for k, v in env.items()}}
    visible = env.get("CUDA_VISIBLE_DEVICES")
    n_visible = len([x for x in visible.text.split(",") if x.strip()]) if visible is not None and visible.text else None
    if visible is not None:
        out["cuda_visible_devices"] = visible.show()
    port = "default"
    nproc: int | None = None
    nnodes: int | None = None
    own = cli_args[:_script_index(cli_args)] if kind != "python-wrapper" else cli_args  # the launcher's options,
    # not the training script's (which may have a --master_port of its own)
    if kind in ("torchrun", "torch.distributed.launch", "colossalai"):
        cli_args, rest_args = own, cli_args
        v, _ = _opt(cli_args, ("--master_port", "--master-port"))
        port = _port_of(v) if v is not None else _port_of(env.get("PET_MASTER_PORT"))
        ep, _ = _opt(cli_args, ("--rdzv_endpoint", "--rdzv-endpoint"))
        if ep is not None and v is None:
            port = _port_of(_endpoint_port(ep)) if ep.show() else "unknown"
            backend, _ = _opt(cli_args, ("--rdzv_backend", "--rdzv-backend"))
            if ep.known and ":" not in (ep.text or "") and backend is not None and backend.text == "c10d":
                port = "29400"  # torchrun's default port for a c10d endpoint without one (dynamic_rendezvous)
            out["rendezvous"] = ep.show()
        if any(a.text == "--standalone" for a in cli_args[:_script_index(cli_args)]):
            port = "free"
        np_, _ = _opt(cli_args, ("--nproc_per_node", "--nproc-per-node"))
        if np_ is not None:
            nproc = _int(np_)
            if nproc is None and np_.text in ("gpu", "auto") and n_visible:
                nproc = n_visible
        nn, _ = _opt(cli_args, ("--nnodes",))
        if nn is not None and nn.text:
            nnodes = _int(Value.lit(nn.text.split(":")[-1]))
        rank, _ = _opt(cli_args, ("--node_rank", "--node-rank"))
        if rank is not None:
            out["node_rank"] = rank.show()
        addr, _ = _opt(cli_args, ("--master_addr", "--master-addr"))
        if addr is not None and "rendezvous" not in out:
            out["rendezvous"] = f"{addr.show()}:{port}"
        sig, _ = _opt(cli_args, ("--signals-to-handle", "--signals_to_handle"))
        if sig is not None:
            out["signals_to_handle"] = sig.show()
        if kind == "colossalai":
            nn, _ = _opt(cli_args, ("--num_nodes",))
            nnodes = _int(nn) if nn is not None else nnodes
        script, rest = _script_args(kind, rest_args)
        out["config"] = _config_of(rest, cmd.loop_vars)
    elif kind == "llamafactory-cli":
        cfg = cli_args[1] if len(cli_args) > 1 else None
        # `llamafactory-cli train --stage sft --model_name_or_path ...`: the options are the config, no file
        out["config"] = cfg.show() if cfg is not None and cfg.any_known and not cfg.show().startswith("-") else None
        nproc = _int(env.get("NPROC_PER_NODE")) or n_visible
        force = env.get("FORCE_TORCHRUN")
        distributed = (nproc or 0) > 1 or (force is not None and force.text not in (None, "", "0", "false"))
        mp = env.get("MASTER_PORT")
        # llamafactory-cli runs torchrun for more than one device and then picks a free port unless MASTER_PORT
        # is set (src/llamafactory/cli.py)
        port = _port_of(mp) if mp is not None else ("free" if distributed or nproc is None else "none")
        nnodes = _int(env.get("NNODES"))
        if (nnodes or 1) > 1:  # llamafactory-cli's multi-node run: torchrun with these variables
            out["node_rank"] = env["NODE_RANK"].show() if env.get("NODE_RANK") is not None else None
            addr = env.get("MASTER_ADDR")
            out["rendezvous"] = f"{addr.show() if addr is not None else '?'}:{port}"
    elif kind == "accelerate":
        # command-line options win over the accelerate config file (--config_file, else the user's default config,
        # which is not in the tree: then its defaults are assumed, as the RID siblings show they collide)
        cli_args, rest_args = own, cli_args
        acc = _accelerate_config(_opt(cli_args, ("--config_file",))[0], cmd, script_dir)
        v, _ = _opt(cli_args, ("--main_process_port",))
        port = _port_of(v) if v is not None else (acc.get("port") or "default")
        np_, _ = _opt(cli_args, ("--num_processes",))
        nm, _ = _opt(cli_args, ("--num_machines",))
        nnodes = _int(nm) if nm is not None else acc.get("nnodes")
        total = _int(np_) if np_ is not None else acc.get("nproc")
        if total is not None:
            nproc = total // (nnodes or 1)
        if total == 1 and (nnodes or 1) == 1 and acc.get("read") and not acc.get("distributed") and not any(
                a.text in ("--multi_gpu", "--use_deepspeed", "--use_fsdp", "--use_megatron_lm") for a in cli_args):
            # accelerate/commands/launch.py launch_command: a config that says one process and no distributed type
            # runs simple_launcher, a plain python without torchrun or a master port (without a config file the
            # user's default config decides, which the tree does not show)
            port = "none"
        ids, _ = _opt(cli_args, ("--gpu_ids",))
        if visible is None:
            if ids is not None:
                out["cuda_visible_devices"] = ids.show()
            elif acc.get("gpus"):
                out["cuda_visible_devices"] = acc["gpus"]
        if acc.get("unknown"):
            out["gpus_known"] = False
        script, rest = _script_args(kind, rest_args)
        out["config"] = _config_of(rest, cmd.loop_vars)
    elif kind == "deepspeed":
        cli_args, rest_args = own, cli_args
        v, _ = _opt(cli_args, ("--master_port",))
        port = _port_of(v) if v is not None else "default"
        ng, _ = _opt(cli_args, ("--num_gpus", "--num_accelerators"))
        nproc = _int(ng)
        inc, _ = _opt(cli_args, ("--include", "-i"))
        exc, _ = _opt(cli_args, ("--exclude", "-e"))
        nn, _ = _opt(cli_args, ("--num_nodes",))
        nnodes = _int(nn)
        hostfile, _ = _opt(cli_args, ("--hostfile", "-H"))
        # deepspeed/launcher/runner.py main(): on one node (no hostfile) CUDA_VISIBLE_DEVICES becomes
        # --include=localhost:<it> only when none of --include/--exclude/--num_gpus/--num_nodes>1 is given; it is
        # then deleted, and the workers get the GPUs those options pick from the physical ones (--num_gpus N:
        # GPUs 0..N-1; `CUDA_VISIBLE_DEVICES=6,7 deepspeed --num_gpus=1` runs on GPU 0)
        if hostfile is None:
            if inc is not None:
                if inc.text and "@" not in inc.text:
                    devs = inc.text.split(":", 1)[1] if ":" in inc.text else ""
                    out["cuda_visible_devices"] = devs or None
                    if devs:
                        nproc = len([d for d in devs.split(",") if d.strip()])
                else:
                    out["cuda_visible_devices"], out["gpus_known"] = inc.show(), False
            elif nproc is not None:
                out["cuda_visible_devices"] = ",".join(str(k) for k in range(nproc))
            elif exc is not None or (nnodes or 1) > 1:
                out.pop("cuda_visible_devices", None)
                out["gpus_known"] = False
            elif visible is not None and n_visible:
                nproc = n_visible
        script, rest = _script_args(kind, rest_args)
        out["config"] = _config_of(rest, cmd.loop_vars)
    else:  # python-wrapper
        out["wrapper"] = wrapper.path if wrapper else None
        v, _ = _opt(cli_args, ("--master_port", "--master-port", "--port", "--main_process_port"))
        mp = env.get("MASTER_PORT")
        if v is not None:
            port = _port_of(v)
        elif wrapper is not None and wrapper.reads_master_port and mp is not None:
            port = _port_of(mp)
        elif wrapper is not None:
            port = wrapper.port
            if port == "default" and env.get("PET_MASTER_PORT") is not None:
                port = _port_of(env["PET_MASTER_PORT"])  # the torchrun it starts inherits the environment
        elif prog in _WRAPPER_CLIS and mp is not None:
            port = _port_of(mp)
        if prog == "swift" and env.get("NPROC_PER_NODE") is None and env.get("NNODES") is None:
            # swift/cli/main.py use_torchrun(): without NPROC_PER_NODE or NNODES it runs one plain python
            # process, no torchrun and no master port
            port, nproc_one = "none", True
        else:
            nproc_one = False
        np_, _ = _opt(cli_args, ("--nproc_per_node", "--nproc-per-node", "--gpus", "--num_gpus", "--gpu_per_node",
                                 "--gpus_per_node", "--ngpus"))
        nproc = _int(np_) if np_ is not None else None
        if nproc is None and wrapper is not None:
            nproc = wrapper.nproc if wrapper.nproc is not None else (n_visible if wrapper.nproc_from_visible else None)
        if nproc is None and prog in _WRAPPER_CLIS:
            nproc = 1 if nproc_one else _int(env.get("NPROC_PER_NODE"))
        nnodes = _int(_opt(cli_args, ("--num_nodes", "--nnodes"))[0])
        out["config"] = _config_of(cli_args, cmd.loop_vars)
        if (wrapper is not None and wrapper.submits) or (wrapper is None and _opt(cli_args, ("--partition",
                                                                                              "--qos"))[0]):
            out["protected_by"] = "sbatch"  # a submitit / Slurm wrapper: the job runs under the scheduler
    out["reads_master_port"] = kind == "llamafactory-cli" or prog in _WRAPPER_CLIS or \
        (wrapper is not None and wrapper.reads_master_port)
    out["port"] = port
    out["master_port"] = int(port) if port.isdigit() else None
    out["master_port_explicit"] = port.isdigit()
    out["picks_free_port"] = port == "free"
    out["nproc"] = nproc
    out["nnodes"] = nnodes
    return out


def _accelerate_config(ref: Value | None, cmd: Command, script_dir: str) -> dict[str, Any]:
    """What an accelerate config file says about processes, GPUs and port (`num_processes`, `gpu_ids`,
    `main_process_port`, `num_machines`); {"unknown": True} when the named file cannot be read."""
    if ref is None:
        return {}
    path = _resolve_file(ref.text, cmd, script_dir) if ref.text else None
    if path is None:
        return {"unknown": True, "port": "unknown"}
    try:
        import yaml

        if os.path.getsize(path) > 1 << 20:
            return {"unknown": True, "port": "unknown"}
        text = Path(path).read_text(encoding="utf-8", errors="replace")
        # accelerate writes its config with yaml.safe_dump of a plain dict: never an alias. One here may be an
        # alias bomb (a few lines that expand to billions of nodes): not read
        if any(isinstance(ev, yaml.AliasEvent) for ev in yaml.parse(text, Loader=yaml.SafeLoader)):
            return {"unknown": True, "port": "unknown"}
        data = yaml.safe_load(text)
    except Exception:  # noqa: BLE001 - an unreadable accelerate config tells nothing
        return {"unknown": True, "port": "unknown"}
    if not isinstance(data, dict):
        return {}
    out: dict[str, Any] = {"read": True}
    if isinstance(data.get("num_processes"), int):
        out["nproc"] = data["num_processes"]
    if str(data.get("distributed_type", "NO")).upper() not in ("NO", "NONE"):
        out["distributed"] = True
    if isinstance(data.get("num_machines"), int):
        out["nnodes"] = data["num_machines"]
    if isinstance(data.get("main_process_port"), int):
        out["port"] = str(data["main_process_port"])
    ids = data.get("gpu_ids")
    if ids not in (None, "all", "") and str(ids).replace(",", "").strip().isdigit():
        out["gpus"] = str(ids)
    return out


def _script_index(args: list[Value]) -> int:
    script, rest = _script_args("torchrun", args)
    return len(args) - len(rest) - (1 if script is not None else 0)


def _launcher_like(args: list[Value]) -> bool:
    names = {a.show().split("=", 1)[0] for a in args}
    return bool(names & {"--nproc_per_node", "--gpu_per_node", "--gpus_per_node", "--num_gpus", "--master_port"}) \
        or ({"--port", "--num_nodes"} <= names)


def _log_of(cmd: Command) -> Value | None:
    """stdout's file (else stderr's), or the file of a `| tee` after it; `2>&1` follows stdout."""
    out = err = None
    for fd, op, target in cmd.redirs:
        if op in ("<", "<<<", "<&", "<>"):
            continue
        if op in (">&",) and target.text is not None and target.text.isdigit():
            if fd == "2" and target.text == "1":
                err = out
            continue
        if fd in ("1", "&"):
            out = target
            if fd == "&":
                err = target
        elif fd == "2":
            err = target
    if out is None and cmd.pipeline and cmd.index + 1 < len(cmd.pipeline):
        nxt = cmd.pipeline[cmd.index + 1]
        if nxt and nxt[0].text in ("tee",):
            files = [a for a in nxt[1:] if not a.show().startswith("-")]
            if files:
                return files[0]
    return out or err


_KILL_NAME = re.compile(r"^(pkill|killall)$")


def _kill_hazard(cmd: Command) -> bool:
    """`pkill -f NAME`, `killall NAME`, `ps | grep | awk kill | sh`, `lsof -ti:PORT | xargs kill -9`, `fuser -k`:
    kills every matching process on the host, including other users' and other jobs' training."""
    if not cmd.argv or cmd.argv[0].text is None:
        return False
    prog = os.path.basename(cmd.argv[0].text)
    args = [a.show() for a in cmd.argv[1:]]
    if _KILL_NAME.match(prog):
        return True
    if prog == "fuser" and any(a.startswith("-") and "k" in a for a in args):
        return True
    if prog in ("kill",) and any("$(" in a or "`" in a or "pgrep" in a or "pidof" in a for a in args):
        return True
    if prog == "xargs" and args[:1] == ["kill"] or prog == "xargs" and "kill" in args:
        return True
    if prog in ("sh", "bash") and cmd.index > 0 and cmd.pipeline:
        before = " ".join(a.show() for argv in cmd.pipeline[:cmd.index] for a in argv)
        return "kill" in before
    return False


def parse_launcher(path: str | os.PathLike[str], text: str | None = None) -> Launcher:
    p = Path(path)
    if text is None:
        try:
            st = os.stat(p)
            if not stat.S_ISREG(st.st_mode):
                # a FIFO or a device (a /dev/zero symlink named x.sh) would block or never end: never opened
                raise InputError(f"{p}: not a regular file; not reading it")
            if st.st_size > MAX_LAUNCHER_BYTES:
                raise InputError(f"{p}: {st.st_size} bytes is too large for a launcher script "
                                 f"(at most {MAX_LAUNCHER_BYTES})")
            # bytes, not text mode: CRLF must survive an edit; undecodable bytes survive as surrogates
            with open(p, "rb") as f:
                text = f.read(MAX_LAUNCHER_BYTES + 1).decode("utf-8", errors="surrogateescape")
        except OSError as e:
            raise InputError(f"{p}: cannot read: {e.strerror}") from None
    src = text.replace("\r\n", "\n")
    clear_caches()  # file-system answers are cached for one reading of a tree, not across runs in one process
    try:
        cmds = walk_script(str(p), src)
    except RecursionError:
        cmds = []
    except ShellBudget as e:
        raise InputError(f"{p}: not read: {e}") from None
    script_dir = str(p.resolve().parent)
    lines = text.splitlines()
    sbatch = bool(re.search(r"^#SBATCH\s", src, re.M))
    found: list[tuple[Command, dict[str, Any]]] = []
    kills: list[Hazard] = []
    seen: set[tuple[int, str]] = set()
    waits: list[int] = []
    disowns: list[int] = []
    for c in cmds:
        name = os.path.basename(c.argv[0].text or "") if c.argv else ""
        if name == "wait" and not c.remote:
            waits.append(c.seq)
            continue
        if name == "disown":
            disowns.append(c.seq)
            continue
        if _kill_hazard(c):
            kills.append(Hazard(c.line, " ".join(a.show() for a in c.argv)))
            continue
        if name in ("echo", "printf", "cat", "eval"):
            continue
        info = job_from(c, script_dir)
        if info is None:
            continue
        key = (c.line, info["kind"])
        if key in seen:
            continue  # the same job line reached again (a second path through the script)
        seen.add(key)
        found.append((c, info))
    jobs: list[Job] = []
    group = 0
    for order, (c, info) in enumerate(found):
        via = c.via
        protected = info.pop("protected_by", None)
        for w in via:
            base = w.split()[0]
            if base in _PROTECTORS:
                protected = protected or base
                break
        if protected is None and sbatch and not c.remote:
            protected = "sbatch"
        if protected is None and c.background and any(d > c.seq for d in disowns):
            protected = "disown"
        if order and any(found[order - 1][0].seq < w < c.seq for w in waits):
            group += 1
        log = _log_of(c)
        first = max(1, c.line)
        body = " ".join(lines[first - 1:max(first, c.end_line)]).strip() if lines else ""
        jobs.append(Job(file=str(p), line=c.line, end_line=max(c.end_line, c.line), text=body,
                        background=c.background, nohup="nohup" in via, protected_by=protected,
                        log=log.show() if log is not None else None,
                        log_pattern=log.pattern() if log is not None and log.any_known else None,
                        log_parts=tuple((x.text, x.known) for x in log._flat()) if log is not None else (),
                        group=group, order=order, remote=c.remote, cwd=c.cwd, cwd_rel=c.cwd_rel,
                        waited=any(w > c.seq for w in waits), loop_vars=c.loop_vars, loop_runs=c.loop_runs,
                        async_path=c.async_path, own_line=c.own_line if c.own_line != c.line else None,
                        branches=c.branches,
                        **info))
    return Launcher(str(p), text, tuple(jobs), tuple(kills), sbatch)


def same_host(a: Job, b: Job) -> bool:
    return (a.remote or "") == (b.remote or "")


def one_multinode_job(a: Job, b: Job) -> bool:
    """Two node ranks of one multi-node job: same rendezvous endpoint, different node ranks (their shared port is
    how they find each other, not a collision)."""
    if (a.nnodes or 1) < 2 or (b.nnodes or 1) < 2:
        return False
    return a.rendezvous is not None and a.rendezvous == b.rendezvous and a.node_rank != b.node_rank


def concurrent(a: Job, b: Job) -> bool:
    """Two jobs of one launcher that run at the same time on one host: the earlier one runs inside an `&`-started
    list that the later one is not part of (`a &; b` overlap, `(a; b) &` run one after the other, `(a; b) & c`
    overlaps c with both), and no `wait` came between."""
    first, second = (a, b) if a.order < b.order else (b, a)
    common = 0
    while common < min(len(first.async_path), len(second.async_path)) and \
            first.async_path[common] == second.async_path[common]:
        common += 1
    started_apart = len(first.async_path) > common
    exclusive = any(fa == fb and ka != kb for fa, ka in first.branches for fb, kb in second.branches)
    return started_apart and not exclusive and first.group == second.group and same_host(a, b) and \
        not one_multinode_job(a, b)


def looks_like_launcher(path: Path) -> bool:
    return path.suffix == ".sh"


def read_launchers(paths: list[str]) -> list[Launcher]:
    """`oomfix jobs`: each named script, read; a missing or unreadable one is a one-line error."""
    out = []
    for p in paths:
        if not os.path.exists(p):
            raise InputError(f"{p}: no such file")
        if os.path.isdir(p):
            raise InputError(f"{p}: is a directory; name the launcher scripts")
        out.append(parse_launcher(p))  # a FIFO, a device, an oversized or over-budget script: a one-line error
    return out


NOT_LOGS = ("/dev/null", "/dev/stdout", "/dev/stderr", "/dev/tty")


def job_bases(job: Job) -> list[str]:
    """Directories a job's relative paths may be relative to, most likely first: the directory the script `cd`s
    to; else the directory it is started from (the current directory, the repository root, the script's
    directory or an ancestor), then the script's own directory."""
    return list(_bases(os.path.abspath(job.file), job.cwd, job.cwd_rel, job.remote, os.getcwd()))


@functools.lru_cache(maxsize=4096)
def _bases(file: str, cwd: str | None, cwd_rel: str | None, remote: str | None, here: str) -> tuple[str, ...]:
    script_dir = os.path.dirname(file)
    if remote:
        return ()
    if cwd:
        return (cwd,)
    out = []
    if cwd_rel is not None:
        out = [os.path.normpath(os.path.join(b, cwd_rel)) for b in run_dirs_for(script_dir)]
    if script_dir not in out:
        out.append(script_dir)
    return tuple(out)


def job_paths(job: Job, ref: str) -> list[str]:
    """Every existing file a job's relative path can mean, most likely first (more than one: ambiguous)."""
    if os.path.isabs(ref):
        return [ref] if os.path.isfile(ref) else []
    out: list[str] = []
    for b in job_bases(job):
        c = os.path.normpath(os.path.join(b, ref))
        if os.path.isfile(c) and all(not os.path.samefile(c, x) for x in out):
            out.append(c)
    return out


def job_path(job: Job, ref: str) -> str | None:
    """A file a job names (its config), resolved against the directories it may run in; the first that exists."""
    found = job_paths(job, ref)
    return found[0] if found else None


def _log_regex(job: Job, base: str | None) -> re.Pattern[str]:
    return _log_regex_for(job.log_parts, base)


@functools.lru_cache(maxsize=16384)
def _log_regex_for(log_parts: tuple[tuple[str, bool], ...], base: str | None) -> re.Pattern[str]:
    out = []
    for k, (text, known) in enumerate(log_parts):
        if not known:
            out.append("[^/]*" if k else ".*")
            continue
        if k == 0 and base is not None and not text.startswith("/"):
            trail = "/" if text.endswith("/") else ""
            text = os.path.normpath(os.path.join(base, text)) + trail
        elif k == 0 and text.startswith("/"):
            text = os.path.normpath(text) + ("/" if text.endswith("/") and text != "/" else "")
        out.append(re.escape(text))
    return re.compile("".join(out) + r"\Z")


def log_matches(job: Job, log_path: str) -> bool:
    """Does a real log file come from this job? Its log path as a pattern (`train_gpu0123_${TS}.log` matches any
    timestamp), resolved against the directories the job may run in; the file name alone when none resolves."""
    if not job.log or job.log in NOT_LOGS or not any(known and text.strip("/.") for text, known in job.log_parts):
        return False
    name_rx, literal = _name_rx(job.log_parts)
    if not name_rx.match(os.path.basename(log_path)) and not os.path.islink(log_path):
        return False  # cheap first: a full-path match implies a file-name match
    real = os.path.realpath(log_path)
    absl = os.path.abspath(log_path)
    first_known = job.log_parts[0][1]
    if first_known and job.log_parts[0][0].startswith("/"):
        rx = _log_regex(job, None)
        return rx.match(real) is not None or rx.match(absl) is not None
    if first_known:
        log_dir = job.log_parts[0][0].rpartition("/")[0] if "/" in job.log_parts[0][0] else "."
        dir_here = False
        for b in job_bases(job):
            rx = _log_regex(job, b)
            if rx.match(real) or rx.match(absl):
                return True
            dir_here = dir_here or _isdir(os.path.join(b, log_dir))
        if dir_here and log_dir != ".":
            return False  # the job's log directory is here, and this file is not in it
    return literal >= 4 and name_rx.match(os.path.basename(log_path)) is not None


@functools.lru_cache(maxsize=16384)
def _name_rx(log_parts: tuple[tuple[str, bool], ...]) -> tuple[re.Pattern[str], int]:
    """The file-name part of a log path as a pattern (unknown parts as wildcards), and how many literal characters
    it has (a name that is all wildcards matches nothing by itself)."""
    tail: list[str] = []
    literal = 0
    for text, known in reversed(log_parts):
        if known and "/" in text:
            tail.append(re.escape(text.rsplit("/", 1)[1]))
            literal += len(text.rsplit("/", 1)[1])
            break
        tail.append(re.escape(text) if known else "[^/]*")
        literal += len(text) if known else 0
    return re.compile("".join(reversed(tail)) + r"\Z"), literal
