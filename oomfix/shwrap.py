"""Wrappers and other script files: where the real command of a line is.

The command inside a wrapper runs too: `nohup`, `setsid`, `env`, `timeout`, `srun`, `conda run`, `docker run`,
`apptainer exec` ... pass their argv on (their own options skipped, `env K=V` and `docker -e K=V` added to its
environment); `tmux`, `screen`, `ssh` and `sbatch --wrap` take a command string, `sbatch script` and `bash other.sh`
run another script of the tree, `source` reads one into the current shell. Also `cd` and the commands whose output
`$(...)` captures. `Wrappers` is a mixin: the walker that inherits it runs what these find.
"""
from __future__ import annotations

import os
import posixpath
import re
from dataclasses import replace
from typing import TYPE_CHECKING

from oomfix.shvalues import Ctx, State, Value, _join, concat


class Wrappers:
    """The wrapper and script-file methods of the walker (`Walker` inherits them)."""

    if TYPE_CHECKING:  # provided by the walker and its expansion mixin
        path: str
        sources_seen: set[str]

        def dispatch(self, argv: list[Value], prefix: dict[str, Value], st: State, ctx: Ctx,
                     heredoc: int | None = None) -> None: ...

        def run_string(self, src: Value | str, st: State, ctx: Ctx, heredoc_bodies: bool = False) -> None: ...

        def expand_str(self, text: str, st: State, ctx: Ctx, quoted: bool = True) -> Value: ...

    def _wrappers(self, base: str, argv: list[Value], prefix: dict[str, Value], st: State, ctx: Ctx,
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

    def _heredoc_script(self, idx: int, st: State, ctx: Ctx, via: str) -> None:
        if idx >= len(ctx.bodies):
            return
        body, expand = ctx.bodies[idx]
        if expand:
            body = self.expand_str(body, st, ctx).show()
        self.run_string(body, st, replace(ctx, via=ctx.via + (via + " <<",)))

    def _capture(self, base: str, args: list[Value], st: State, ctx: Ctx) -> bool:
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

    def _source(self, target: Value, args: list[Value], st: State, ctx: Ctx) -> None:
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
                    ctx: Ctx, shell: str, exts: tuple[str, ...] = (".sh", ".bash", ".env")) -> bool:
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
