"""What `oomfix run` reads from CMD before it starts it: the training jobs it starts (read the way `oomfix jobs`
reads a launcher line, or the script CMD runs), the config they train with, the job's own log when the script
redirects it, the refusal of a CMD that starts several jobs, and CMD with a new master port for a relaunch.
"""
from __future__ import annotations

import os
import re
import shlex
import socket
from collections.abc import Sequence
from typing import Any

from oomfix.errors import OomfixError

# torchrun reads every option from PET_<NAME> when it is not on the command line (torch/distributed/argparse_util.py);
# MASTER_PORT is what llamafactory-cli, `deepspeed` and a bare init_process_group(env://) read
PORT_ENV = ("MASTER_PORT", "PET_MASTER_PORT")
_PORT_OPTS = ("--master_port", "--master-port", "--main_process_port", "--main-process-port")
_ENDPOINT_OPTS = ("--rdzv_endpoint", "--rdzv-endpoint")


# --- the master port ----------------------------------------------------------------------------------------------

def free_port() -> int:
    """A TCP port nobody listens on now (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("", 0))
        return int(s.getsockname()[1])


def with_port(argv: Sequence[str], port: int) -> tuple[str, ...]:
    """The command with an explicit master port replaced (an option on the command line beats the environment)."""
    out = list(argv)
    i = 0
    while i < len(out):
        a = out[i]
        name, eq, value = a.partition("=")
        if name in _PORT_OPTS:
            if eq:
                out[i] = f"{name}={port}"
            elif i + 1 < len(out):
                out[i + 1] = str(port)
                i += 1
        elif name in _ENDPOINT_OPTS:
            j = i if eq else i + 1
            if j < len(out):
                v = value if eq else out[j]
                host = v.rsplit(":", 1)[0] if ":" in v else v
                new = f"{host}:{port}"
                out[j] = f"{name}={new}" if eq else new
                i = j
        i += 1
    return tuple(out)


# --- the jobs CMD starts ------------------------------------------------------------------------------------------

def command_jobs(argv: Sequence[str], cwd: str = ".") -> tuple[str | None, list[Any]]:
    """The training jobs CMD starts, read the way `oomfix jobs` reads a launcher line (or the script CMD runs), and
    the script's path when CMD runs one."""
    from oomfix.launcher import parse_launcher

    here = os.path.abspath(cwd)
    try:
        if len(argv) >= 2 and os.path.basename(argv[0]) in ("bash", "sh") and os.path.isfile(argv[1]):
            return argv[1], list(parse_launcher(argv[1]).jobs)  # the script's own jobs, each with its line
        lau = parse_launcher(os.path.join(here, "oomfix-run-command.sh"), shlex.join(argv))
    except OomfixError:
        return None, []  # an unreadable script: the config comes from --config or the log
    return None, list(lau.jobs)


def config_of_command(argv: Sequence[str], cwd: str = ".") -> str | None:
    """The training config CMD starts, read the way `oomfix jobs` reads a launcher line (or the script CMD runs)."""
    from oomfix.launcher import job_path

    here = os.path.abspath(cwd)
    _, jobs = command_jobs(argv, cwd)
    paths = {p for j in jobs if j.config and (p := job_path(j, j.config))}
    if len(paths) != 1:
        return None
    return os.path.relpath(paths.pop(), here)


_EXPANSION = re.compile(r"\$\([^()]*\)|\$\{[^{}]*\}|\$\w+|`[^`]*`")


def job_log_pattern(job: Any, cwd: str) -> str | None:
    """The job's own log file when the script redirects its output to one: a path, or a glob pattern where the path
    has parts known only when it runs (`logs/train_$(date +%s).log` -> `logs/train_*.log`)."""
    if not job.log:
        return None
    log = _EXPANSION.sub("*", job.log)
    if "$" in log or "`" in log or log.strip("*/") == "":
        return None
    base = job.cwd or cwd
    return os.path.relpath(os.path.normpath(os.path.join(base, log)), cwd)


def job_log_of_attempt(pattern: str, since: float) -> str | None:
    """The job's log this attempt wrote: the path, or the newest file matching the pattern modified since the
    attempt started."""
    import glob

    if not glob.has_magic(pattern):
        return pattern if os.path.exists(pattern) else None
    found = []
    for p in glob.glob(pattern):
        try:
            m = os.stat(p).st_mtime
        except OSError:
            continue
        if m >= since - 1:
            found.append((m, p))
    return max(found)[1] if found else None


def jobs_problem(script: str | None, jobs: Sequence[Any]) -> str | None:
    """Why one supervisor cannot supervise CMD: a script that starts several jobs, in the background or each with
    its own log (its exit status, after `wait`, says nothing about them; relaunching it restarts all of them)."""
    def exclusive(a: Any, b: Any) -> bool:  # two branches of one if/case: only one of them runs
        return any(fa == fb and ka != kb for fa, ka in a.branches for fb, kb in b.branches)

    several = any(not exclusive(a, b) for i, a in enumerate(jobs) for b in jobs[i + 1:]) \
        or any(j.loop_runs > 1 for j in jobs)  # `for cfg in a b; do torchrun ... & done`
    if not several or not any(j.background or j.log for j in jobs):
        return None
    listed = "; ".join(f"line {j.line}: {' '.join(j.tokens[:6])}{' ...' if len(j.tokens) > 6 else ''}"
                       + (f" > {j.log}" if j.log else "") + (" &" if j.background else "") for j in jobs)
    count = sum(j.loop_runs for j in jobs)
    return (f"{script or 'CMD'} starts {count} training jobs ({listed}); one supervisor cannot tell which of "
            f"them failed, and a relaunch would restart all of them. Supervise each job on its own: "
            f"`oomfix run --config CONFIG -- JOB-COMMAND`, once per job (in the script: `setsid oomfix run ... &`)")

