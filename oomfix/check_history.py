"""`oomfix check`, the run-history checks: each config against the runs it has had, from the logs in the tree
and the run ledger (`.oomfix/runs.jsonl`): a failure relaunched unchanged, a memory increase after an OOM, a
memory edit after a failure that was not memory, a stale run (`check_runs`), and a config back at values a run of
it died of memory with (`check_known_oom_values`). When a run ran is read from its log's own time stamps and from
git (`log_time`, `unchanged_since`); an `oomfix apply --write` of the log, in the journal, is a fix.
"""
from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from oomfix.checktree import ERROR, WARNING, Finding, Tree, _config_key_line, _explicit, _keyname
from oomfix.configs import Config, display_path, same_file
from oomfix.dialects import MEMORY_KEYS
from oomfix.errors import InputError
from oomfix.launcher import git_root, log_matches
from oomfix.model import MEMORY_CLASSES, Diagnosis

def _config_of_log(tree: Tree, log: str, d: Diagnosis) -> Config | None:
    """The config a log's run used: the job whose log path (a pattern) the file matches, else the config the log
    names."""
    if tree._log_jobs is None:
        tree._log_jobs = [(c, found[1]) for c in tree.configs if (found := tree.job_of(c)) and found[1].log]
    for c, job in tree._log_jobs:
        if log_matches(job, log):
            return c
    ref = d.run.config
    if ref:
        for c in tree.configs:
            if c.path == ref or c.path.endswith("/" + ref.lstrip("./")) or \
                    (os.path.isfile(ref) and same_file(c.path, ref)):
                return c
    return None


_STAMP = re.compile(rb"(20\d\d)[-/](\d\d)[-/](\d\d)[ T_](\d\d):(\d\d):(\d\d)")


def log_time(log: str) -> float | None:
    """When a run last wrote to its log, from the log's own text (its last full date-and-time stamp, read as local
    time): a checkout rewrites mtimes, the log's content keeps them."""
    try:
        with open(log, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - (256 << 10)))
            tail = f.read()
    except OSError:
        return None
    if tail[:2] == b"\x1f\x8b":
        return None
    last = None
    for m in _STAMP.finditer(tail):
        last = m
    if last is None:
        return None
    try:
        return time.mktime(tuple(int(x) for x in last.groups()) + (0, 0, -1))  # type: ignore[arg-type]
    except (OverflowError, ValueError):
        return None


def _git(args: list[str], cwd: str) -> str | None:
    if git_root(os.path.abspath(cwd)) is None:
        return None  # not a work tree: no process to start
    try:
        p = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return p.stdout if p.returncode == 0 else None


def _git_commits(path: str) -> list[tuple[str, int]] | None:
    """(commit, time) of every commit that touched a file, newest first; None outside a git work tree, [] for a
    file git does not track."""
    d = os.path.dirname(os.path.abspath(path))
    out = _git(["log", "--format=%H %ct", "--", os.path.basename(path)], d)
    if out is None:
        return None
    return [(h, int(t)) for h, t in (ln.split() for ln in out.splitlines() if ln.strip())]


def _git_version_unchanged(path: str, run_t: float) -> tuple[bool, str, str] | None:
    """Is the file's content now the content git had for it when the run last logged (the newest commit not after
    that time; when every commit is later, the first one: configs and logs are often committed after the run)?"""
    commits = _git_commits(path)
    if not commits:
        return None
    before = [c for c in commits if c[1] <= run_t]
    base = before[0] if before else commits[-1]
    d, name = os.path.dirname(os.path.abspath(path)), os.path.basename(path)
    blob = _git(["rev-parse", f"{base[0]}:./{name}"], d)
    cur = _git(["hash-object", "--", name], d)
    if blob is None or cur is None:
        return None
    if blob.strip() == cur.strip():
        return True, f"its content is the version committed in {base[0][:8]}, the one in effect when the run ran", \
            base[0]
    return False, f"its content differs from the version committed in {base[0][:8]}, in effect when the run ran", \
        base[0]


def _newest_logs(tree: Tree) -> dict[str, tuple[str, Diagnosis]]:
    newest: dict[str, tuple[float, str, Diagnosis]] = {}
    for log in tree.logs:
        d = tree.diagnosis(log)
        if d is None:
            continue
        cfg = _config_of_log(tree, log, d)
        if cfg is None:
            continue
        t = log_time(log) or os.stat(log).st_mtime
        if cfg.path not in newest or t > newest[cfg.path][0]:
            newest[cfg.path] = (t, log, d)
    return {k: (v[1], v[2]) for k, v in newest.items()}


def _remediated(log: str, config: str, root: str = ".", as_written: bool = False) -> bool:
    """An `oomfix apply --write` of this log that touched this config (and was not undone); `as_written`: and the
    config still has the bytes that apply wrote. Journal paths are relative to the journal's root, so a journal
    committed to git works in a clone."""
    from oomfix.errors import JournalError
    from oomfix.journal import Journal, file_sha256

    sha = file_sha256(log)
    if not sha:
        return False
    roots = [Path(root).resolve(), Path(log).resolve().parent, *Path(log).resolve().parents]
    for r in dict.fromkeys(roots):
        j = Journal(r)
        if j.path.exists():
            try:
                tx = j.applied(sha)
            except JournalError:
                if r != roots[0] and roots[0] not in r.parents:
                    continue  # a damaged journal above the checked tree is not this project's to report
                raise
            for f in tx["files"] if tx is not None else ():
                if same_file(j.resolve(f["file"]), config) and (
                        not as_written or file_sha256(config) == f.get("after_sha256")):
                    return True
    return False


_LOWERING = {"grad_checkpointing": lambda v: v is True, "zero_stage": lambda v: v == 3,
             "offload": lambda v: v not in (None, "none"), "quantization_bit": lambda v: v is not None}


def unchanged_since(cfg: Config, log: str) -> tuple[bool, str]:
    """Is the config on disk the one the failed run used, as far as memory goes? Called when the values the log
    shows (micro batch, accumulation) equal the config's: content before time, so a tree copied without git (every
    file newer than the log) is still read right. What the log cannot show (gradient checkpointing, ZeRO stage,
    offload, quantization) is decided by git's version of the config when the run last logged; outside git, only
    a config newer than the log that now turns one of those on is taken as edited since (file times decide only
    what content cannot)."""
    run_t = log_time(log)
    if run_t is None:
        lc = _git_commits(log)
        run_t = float(lc[-1][1]) if lc else None
    if run_t is not None:
        g = _git_version_unchanged(cfg.path, run_t)
        if g is not None:
            if g[0]:
                return True, "the log's values are the config's, and " + g[1]
            old = _git_old_values(cfg, g[2])
            if old is not None:
                moved = [k for k in MEMORY_KEYS + ("zero_stage", "offload")
                         if k not in ("micro_batch", "grad_accum") and old.get(k) != cfg.values.get(k)]
                if not moved:
                    return True, ("the log's values are the config's, and the edits since the version committed in "
                                  f"{g[2][:8]} touch no memory setting")
                return False, g[1]
    newer = os.stat(cfg.path).st_mtime > (run_t if run_t is not None else os.stat(log).st_mtime)
    lowered = [k for k, on in _LOWERING.items() if on(cfg.values.get(k)) and
               (k in ("zero_stage", "offload") or _explicit(cfg, k))]  # written in the file, not a default
    if newer and lowered:
        return False, (f"the config is newer than the log and turns on {', '.join(lowered)}, which the log cannot "
                       f"show")
    return True, "the log's values are the config's: decided from the content, whatever the file times say"


def _git_old_values(cfg: Config, commit: str) -> dict[str, Any] | None:
    """The canonical values of a config as committed in `commit`."""
    from oomfix.dialects import read_canonical
    from oomfix.editor import parse_config_text

    d, name = os.path.dirname(os.path.abspath(cfg.path)), os.path.basename(cfg.path)
    text = _git(["show", f"{commit}:./{name}"], d)
    if text is None:
        return None
    try:
        data = parse_config_text(text, cfg.path)
    except Exception:  # noqa: BLE001 - an old version that does not parse tells nothing
        return None
    if not isinstance(data, dict):
        return None
    vals = read_canonical(data, cfg.dialect)
    from oomfix.configs import _zero_info

    z = _zero_info(vals.get("zero_config"), cfg.path)
    vals["zero_stage"], vals["offload"] = (z.stage, z.offload) if z else (None, None)
    return vals


# failures whose cause is outside the training config (a signal, the network, a port): a memory edit after one
# of them is not a fix
_NOT_MEMORY = frozenset({"sighup", "sigterm", "port_in_use", "nccl_timeout", "nccl_error", "shm_bus_error"})


def check_known_oom_values(tree: Tree) -> Iterator[Finding]:
    """A config back at values a run of it died of memory with: any log of the tree or an attempt the run ledger
    (`.oomfix/runs.jsonl`, written by `oomfix run`) records. The newest log alone is check_runs' business; this
    catches 2/8 (OOM) -> 1/16 (trained) -> 2/8 again."""
    newest = {p: log for p, (log, _d) in _newest_logs(tree).items()}
    by_path = {c.path: c for c in tree.configs}
    seen: set[tuple[str, tuple[tuple[str, Any], ...]]] = set()
    for path, log, d in _all_runs(tree):
        cfg = by_path.get(path)
        if cfg is None or d.cls not in MEMORY_CLASSES or d.confidence == "low":
            continue
        used = d.run.canonical_values()
        if not used or any(cfg.values.get(k) != v for k, v in used.items()):
            continue
        if newest.get(path) is not None and os.path.realpath(newest[path]) == os.path.realpath(log):
            continue  # the newest log: unremediated-failure speaks for it
        if _remediated(log, cfg.path, tree.root):
            continue
        key = (path, tuple(sorted(used.items())))
        if key in seen:
            continue
        seen.add(key)
        vals = ", ".join(f"{_keyname(cfg, k)} {v}" for k, v in used.items())
        yield Finding("known-oom-values", ERROR, cfg.path, _config_key_line(cfg, "micro_batch"),
                      f"this config is back at {vals}, the values {log} died of {d.cls} with",
                      "use the values of the run that trained after it (`oomfix runs` lists the attempts), or "
                      f"`oomfix apply {log} --all-configs`")


def _all_runs(tree: Tree) -> Iterator[tuple[str, str, Diagnosis]]:
    """(config path, log, diagnosis) of every run the tree or the ledger knows of."""
    done: set[str] = set()
    for log in tree.logs:
        d = tree.diagnosis(log)
        if d is None:
            continue
        cfg = _config_of_log(tree, log, d)
        if cfg is not None:
            done.add(os.path.realpath(log))
            yield cfg.path, log, d
    for root, att in _ledger_attempts(tree):
        log = os.path.join(root, att.log) if not os.path.isabs(att.log) else att.log
        if os.path.realpath(log) in done or not os.path.isfile(log) or att.cls not in MEMORY_CLASSES:
            continue
        d = tree.diagnosis(log)
        if d is None:
            continue
        cfg = _config_of_attempt(tree, root, att, log, d)
        if cfg is not None:
            done.add(os.path.realpath(log))
            yield cfg.path, display_path(log), d


def _ledger_attempts(tree: Tree) -> Iterator[tuple[str, Any]]:
    """The run ledger's attempts, read with ledger.read (its public reader), from the checked tree's root and the
    current directory."""
    from oomfix import ledger

    for root in dict.fromkeys([os.path.abspath(tree.root), os.getcwd()]):
        try:
            for att in ledger.read(root):
                yield root, att
        except (OSError, ValueError, InputError):
            continue  # an unreadable ledger costs its evidence, never the check


def _config_of_attempt(tree: Tree, root: str, att: Any, log: str, d: Diagnosis) -> Config | None:
    import shlex

    from oomfix.supervise import config_of_command

    try:
        ref = config_of_command(shlex.split(att.command), root)
    except (ValueError, OSError):
        ref = None
    if ref is not None:
        full = os.path.join(root, ref)
        for c in tree.configs:
            if same_file(c.path, full):
                return c
    return _config_of_log(tree, log, d)


def check_runs(tree: Tree) -> Iterator[Finding]:
    """unremediated-failure, memory-increase-after-oom and stale-run: a config against its newest log."""
    by_path = {c.path: c for c in tree.configs}
    for path, (log, d) in sorted(_newest_logs(tree).items()):
        cfg = by_path[path]
        used = d.run.canonical_values()
        differs = {k: (v, cfg.values.get(k)) for k, v in used.items() if cfg.values.get(k) != v}
        memory = d.cls in MEMORY_CLASSES
        if memory and d.confidence != "low":
            raised = {k: (o, n) for k, (o, n) in differs.items() if k == "micro_batch" and isinstance(n, int)
                      and n > o}
            if raised:
                o, n = raised["micro_batch"]
                yield Finding("memory-increase-after-oom", ERROR, cfg.path, _config_key_line(cfg, "micro_batch"),
                              f"{log} died of {d.cls} with {_keyname(cfg, 'micro_batch')} {o}; the config now has {n}, "
                              f"which raises per-device memory",
                              f"lower it instead: keep the global batch with a smaller micro batch and more "
                              f"accumulation (`oomfix apply {log} --all-configs`)")
                continue
            if not differs and not _remediated(log, cfg.path, tree.root):
                unchanged, how = unchanged_since(cfg, log)
            else:
                unchanged, how = False, ""
            if unchanged:
                yield Finding("unremediated-failure", ERROR, cfg.path, _config_key_line(cfg, "micro_batch"),
                              f"{log} died of {d.cls} and this config still has the memory settings that run used "
                              f"({how})",
                              f"`oomfix apply {log} --all-configs` proposes the next fix")
                continue
        if differs and d.cls in _NOT_MEMORY and d.confidence != "low" and \
                not any(n is None for _o, n in differs.values()):
            # the origin story: a SIGHUP killed the run, and the micro batch went 1 -> 2 "to fix it"
            what = ", ".join(f"{_keyname(cfg, k)} {o} -> {n}" for k, (o, n) in differs.items())
            m = differs.get("micro_batch")
            raised = m is not None and isinstance(m[1], int) and isinstance(m[0], int) and m[1] > m[0]
            yield Finding("memory-edit-after-non-memory-failure", ERROR if raised else WARNING, cfg.path,
                          _config_key_line(cfg, next(iter(differs))),
                          f"{log} died of {d.cls}, not of memory, and this config's memory settings changed since "
                          f"that run ({what})" + (": the edit raises per-device memory and can only add an OOM"
                                                   if raised else ": nothing in the config caused that failure"),
                          f"put back the values that run used, and fix what killed it (`oomfix diagnose {log}`; "
                          f"`oomfix apply {log}` edits only the launcher)")
            continue
        if differs and not _remediated(log, cfg.path, tree.root, as_written=True):
            # (the difference that oomfix's own journalled fix of this very log made is the fix, not a stale run)
            what = ", ".join(f"{_keyname(cfg, k)} {o} in the run, {'unset' if n is None else n} on disk"
                             for k, (o, n) in differs.items())
            yield Finding("stale-run", WARNING, cfg.path, _config_key_line(cfg, next(iter(differs))),
                          f"{log} ran with different values than this config ({what}): the run predates an edit or "
                          f"ran another file", "relaunch to get a log of the current config, or check which file ran")
