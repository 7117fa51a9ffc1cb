"""Read launcher scripts as text (never run them): which training jobs they start, and how.

A job line is a command that ends in torchrun: directly, as `python -m torch.distributed.run`, through
`llamafactory-cli train`, `accelerate launch`, `deepspeed`, or a Python wrapper whose source calls torchrun.
For each job we keep what the pre-relaunch checks and the launcher fixes need: its environment (script-level
assignments and per-command prefixes), whether it runs in the background, what protects it from SIGHUP, its
config, master port, GPUs and log file, and the line it starts on.
"""
from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from oomfix.errors import InputError

TORCHRUN_KINDS = ("torchrun", "torch.distributed.run", "torch.distributed.launch", "llamafactory-cli", "accelerate",
                  "deepspeed", "python-wrapper")
_WRAPPERS_WITH_ARG = {"timeout": 1, "nice": 0, "ionice": 0, "stdbuf": 0, "time": 0, "exec": 0, "command": 0,
                      "env": 0, "sudo": 0, "numactl": 0, "taskset": 1, "chrt": 1}
_PROTECTORS = {"setsid", "tmux", "screen", "systemd-run", "srun", "sbatch", "salloc", "dtach", "disown", "bsub",
               "qsub", "flux", "kubectl"}
_ASSIGN = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$", re.S)
_VAR = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))")
_CALLS_TORCHRUN = re.compile(r"""["'](?:torchrun|llamafactory-cli)["']|torch\.distributed\.run|-m",\s*"torch\.distributed|"""
                             r"""["']deepspeed["']|["']accelerate["']\s*,\s*["']launch""")
_CONFIG_EXT = (".yaml", ".yml", ".json")
_VALUE_OPTS = {"--deepspeed", "--deepspeed_config", "--config_file", "--log_dir", "--output_dir", "--hostfile",
               "--master_addr", "--rdzv_backend", "--rdzv_id", "--redirects", "--tee", "-r", "-t", "--node_rank",
               "--include", "--exclude", "--num_gpus", "--num_nodes"}


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
    cuda_visible_devices: str | None = None
    nproc: int | None = None
    nnodes: int | None = None
    log: str | None = None
    wrapper: str | None = None
    group: int = 0  # jobs in one group run concurrently when started with '&'
    order: int = 0

    @property
    def world_size(self) -> int | None:
        if self.nproc is not None:
            return self.nproc * (self.nnodes or 1)
        if self.cuda_visible_devices:
            return len([d for d in self.cuda_visible_devices.split(",") if d.strip()])
        return None

    @property
    def gpus(self) -> tuple[str, ...]:
        if not self.cuda_visible_devices:
            return ()
        return tuple(d.strip() for d in self.cuda_visible_devices.split(",") if d.strip())

    @property
    def hup_safe(self) -> bool:
        if self.protected_by:
            return True
        return self.signals_to_handle is not None and "SIGHUP" not in self.signals_to_handle.upper()


@dataclass(frozen=True)
class Launcher:
    path: str
    text: str
    jobs: tuple[Job, ...]
    assignments: dict[str, tuple[str, int]]  # VAR -> (value, line)


def _logical_lines(text: str) -> list[tuple[int, int, str]]:
    """(first line, last line, text) with backslash continuations joined; heredoc bodies skipped."""
    out = []
    lines = text.splitlines()
    i = 0
    heredoc = None
    while i < len(lines):
        line = lines[i]
        if heredoc is not None:
            if line.strip() == heredoc:
                heredoc = None
            i += 1
            continue
        start = i
        buf = line
        while buf.endswith("\\") and i + 1 < len(lines):
            i += 1
            buf = buf[:-1] + " " + lines[i]
        m = re.search(r"<<-?\s*['\"]?(\w+)['\"]?", buf)
        if m:
            heredoc = m.group(1)
        out.append((start + 1, i + 1, buf))
        i += 1
    return out


def _expand(s: str, env: dict[str, str]) -> str:
    def sub(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(3)
        if name in env:
            return env[name]
        if m.group(2) is not None:
            return m.group(2)
        return m.group(0)

    return _VAR.sub(sub, s)


def _split(line: str) -> list[str] | None:
    lex = shlex.shlex(line, posix=True, punctuation_chars=";&|<>")
    lex.whitespace_split = True
    lex.commenters = "#"
    try:
        return list(lex)
    except ValueError:
        return None


def _segments(tokens: list[str]) -> list[tuple[list[str], bool, str | None]]:
    """Split a token list into commands: (tokens, runs in background, stdout log file)."""
    segs: list[tuple[list[str], bool, str | None]] = []
    cur: list[str] = []
    log = None
    i = 0
    while i < len(tokens):
        t = tokens[i]
        if t in (";", "&&", "||", "|", "&", "|&", ";;"):
            segs.append((cur, t == "&", log))
            cur, log = [], None
        elif t in (">", ">>", ">&", "&>", "&>>", "<", ">|"):
            if cur and cur[-1].isdigit():
                fd = cur.pop()
            else:
                fd = "1"
            target = tokens[i + 1] if i + 1 < len(tokens) else None
            if t != "<" and target and not target.isdigit() and fd in ("1", "2") and (fd == "1" or log is None):
                log = target
            i += 1
        else:
            cur.append(t)
        i += 1
    if cur:
        segs.append((cur, False, log))
    return segs


def _wrapper_source(path: Path) -> str | None:
    """The text of a Python script that starts torchrun (read, never run), or None."""
    try:
        if path.stat().st_size > 2_000_000:
            return None
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    return text if _CALLS_TORCHRUN.search(text) else None


_WRAPPER_NPROC = re.compile(r"""--nproc[_-]per[_-]node["']?\s*[,=]\s*["']?(\d+)""")
_WRAPPER_PORT = re.compile(r"""--master[_-]port["']?\s*[,=]\s*["']?(\d+)""")


def _resolve(p: str, base: Path) -> Path:
    q = Path(p)
    return q if q.is_absolute() else (base / q)


def _job_from(tokens: list[str], env: dict[str, str], base: Path) -> dict[str, object] | None:
    """Recognise a training job in one command; None if it is something else."""
    toks = list(tokens)
    local_env: dict[str, str] = {}
    nohup = False
    protected = None
    i = 0
    while i < len(toks):
        t = toks[i]
        m = _ASSIGN.match(t)
        if m and not t.startswith("-"):
            local_env[m.group(1)] = m.group(2)
            i += 1
            continue
        name = os.path.basename(t)
        if name == "nohup":
            nohup = True
            i += 1
            continue
        if name in _PROTECTORS:
            protected = protected or name
            i += 1
            if name in ("tmux", "screen"):
                # the job is the quoted command given to the multiplexer
                inner = next((x for x in toks[i:] if " " in x), None)
                if inner is None:
                    return None
                parts = _split(inner) or []
                job = _job_from(parts, {**env, **local_env}, base)
                if job is not None:
                    job["protected_by"] = name
                    job["nohup"] = nohup
                return job
            while i < len(toks) and toks[i].startswith("-"):
                i += 1
            continue
        if name in _WRAPPERS_WITH_ARG:
            i += 1
            while i < len(toks) and toks[i].startswith("-"):
                i += 1
            i += _WRAPPERS_WITH_ARG[name]
            continue
        break
    rest = toks[i:]
    if not rest:
        return None
    prog = os.path.basename(rest[0])
    kind = None
    wrapper = None
    args = rest[1:]
    if prog == "torchrun":
        kind = "torchrun"
    elif prog == "llamafactory-cli" or (prog.startswith("python") and rest[1:3] == ["-m", "llamafactory.cli"]):
        kind = "llamafactory-cli"
    elif prog == "accelerate" and args[:1] == ["launch"]:
        kind = "accelerate"
    elif prog == "deepspeed":
        kind = "deepspeed"
    elif prog.startswith("python"):
        j = 1
        while j < len(rest) and rest[j].startswith("-") and rest[j] != "-m":
            j += 1
        if rest[j:j + 2] in (["-m", "torch.distributed.run"], ["-m", "torch.distributed.launch"]):
            kind = rest[j + 1]
        elif j < len(rest) and rest[j].endswith(".py"):
            script = _resolve(rest[j], base)
            source = _wrapper_source(script)
            if source is not None:
                kind, wrapper = "python-wrapper", str(script)
    elif prog in ("bash", "sh") and len(rest) > 1 and rest[1].endswith(".sh"):
        return None
    if kind is None:
        return None
    full_env = {**env, **local_env}
    out: dict[str, object] = {"kind": kind, "tokens": tuple(rest), "env": full_env, "nohup": nohup,
                              "protected_by": protected, "wrapper": wrapper}
    if wrapper is not None:
        # literal numbers in the wrapper's own torchrun command; its command line below may override them
        m = _WRAPPER_NPROC.search(source or "")
        if m:
            out["nproc"] = int(m.group(1))
        m = _WRAPPER_PORT.search(source or "")
        if m:
            out["master_port"], out["master_port_explicit"] = int(m.group(1)), True
    skip = False
    for idx, tok in enumerate(rest[1:], start=1):
        if skip:
            skip = False
            continue
        key, eq, val = tok.partition("=")
        nxt = rest[idx + 1] if idx + 1 < len(rest) else None
        v = val if eq else nxt
        if key in ("--master_port", "--master-port", "--main_process_port"):
            if v and v.isdigit():
                out["master_port"] = int(v)
                out["master_port_explicit"] = True
            skip = not eq
        elif key in ("--nproc_per_node", "--nproc-per-node", "--num_processes", "--num_gpus"):
            if v and v.isdigit():
                out["nproc"] = int(v)
            skip = not eq
        elif key in ("--nnodes", "--num_machines", "--num_nodes"):
            if v and v.split(":")[-1].isdigit():
                out["nnodes"] = int(v.split(":")[-1])
            skip = not eq
        elif key in ("--signals-to-handle", "--signals_to_handle"):
            out["signals_to_handle"] = v
            skip = not eq
        elif key in ("--rdzv_endpoint", "--rdzv-endpoint"):
            if v and v.rpartition(":")[2].isdigit():
                out["master_port"] = int(v.rpartition(":")[2])
                out["master_port_explicit"] = True
            skip = not eq
        elif key == "--standalone":
            out["picks_free_port"] = True
        elif key in _VALUE_OPTS:
            skip = not eq
        elif "config" not in out and tok.endswith(_CONFIG_EXT) and not tok.startswith("-"):
            out["config"] = tok
    if "MASTER_PORT" in full_env and "master_port" not in out and full_env["MASTER_PORT"].isdigit():
        out["master_port"] = int(full_env["MASTER_PORT"])
        out["master_port_explicit"] = True
    if kind == "llamafactory-cli" and "master_port" not in out:
        out["picks_free_port"] = True  # llamafactory-cli picks a free port when MASTER_PORT is unset
    if kind == "llamafactory-cli":
        nproc = full_env.get("NPROC_PER_NODE")
        if nproc and nproc.isdigit():
            out["nproc"] = int(nproc)
    if "CUDA_VISIBLE_DEVICES" in full_env:
        out["cuda_visible_devices"] = full_env["CUDA_VISIBLE_DEVICES"]
    return out


def parse_launcher(path: str | os.PathLike[str], text: str | None = None) -> Launcher:
    p = Path(path)
    if text is None:
        try:
            # bytes, not text mode: CRLF must survive an edit; undecodable bytes survive as surrogates
            text = p.read_bytes().decode("utf-8", errors="surrogateescape")
        except OSError as e:
            raise InputError(f"{p}: cannot read: {e.strerror}") from None
    env: dict[str, str] = {}
    assignments: dict[str, tuple[str, int]] = {}
    jobs: list[Job] = []
    group = 0
    base = p.parent
    for first, last, line in _logical_lines(text):
        tokens = _split(_expand(line, env))
        if not tokens:
            continue
        for seg, background, log in _segments(tokens):
            if not seg:
                continue
            if seg[0] == "wait":
                group += 1
                continue
            if seg[0] == "export":
                seg = seg[1:]
            if seg and all(_ASSIGN.match(t) for t in seg):
                for t in seg:
                    m = _ASSIGN.match(t)
                    assert m
                    env[m.group(1)] = m.group(2)
                    assignments[m.group(1)] = (m.group(2), first)
                continue
            info = _job_from(seg, dict(env), base)
            if info is None:
                continue
            jobs.append(Job(file=str(p), line=first, end_line=last, text=line.strip(), background=background,
                            log=log, group=group, order=len(jobs), **info))  # type: ignore[arg-type]
            if not background:
                group += 1  # a foreground job finishes before the next line starts
    return Launcher(str(p), text, tuple(jobs), assignments)


def concurrent(a: Job, b: Job) -> bool:
    """Two jobs of one launcher that run at the same time: the earlier one went to the background, no wait between."""
    first, second = (a, b) if a.order < b.order else (b, a)
    return first.background and first.group == second.group


def looks_like_launcher(path: Path) -> bool:
    return path.suffix == ".sh"
