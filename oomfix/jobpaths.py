"""Where a job's files are: the directories a launcher script may run in, the files (its config) a job's relative
paths name there, and whether a real log file is the one a job writes (its log path as a pattern).
"""
from __future__ import annotations

import functools
import os
import re

from oomfix.job import Job


# --- where a script runs from ---------------------------------------------------------------------------------------

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


# --- a job's files and logs -----------------------------------------------------------------------------------------

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
