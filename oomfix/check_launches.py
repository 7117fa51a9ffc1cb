"""`oomfix check`, the launcher checks: how each launcher script starts its jobs, as read (never run) by
`oomfix/launcher.py`: a job the terminal's hang-up kills (`check_unprotected_launch`), `pkill`-style kills by name
(`check_kill_by_name`), jobs running at once on shared GPUs, one master port or one log (`check_gpu_overlap`,
`check_port_collision`, `check_log_collision`), and sibling scripts of one directory that collide when started
together (`check_sibling_launchers`).
"""
from __future__ import annotations

import os
import re
from collections.abc import Iterator
from itertools import combinations

from oomfix.checktree import ERROR, WARNING, Finding, Tree, _jobs
from oomfix.configs import display_path
from oomfix.launcher import NOT_LOGS, Job, Launcher, concurrent, log_matches, one_multinode_job, same_host

_WHY_NOHUP = ("nohup only sets SIGHUP to 'ignore', and torchrun installs its own SIGHUP handler, so the job still "
              "dies when the terminal closes")


_FIX_HUP = ("start it with `setsid nohup CMD > log 2>&1 < /dev/null &`, in tmux/screen, systemd-run or a scheduler, "
            "or pass `--signals-to-handle SIGTERM,SIGINT,SIGQUIT` to torchrun (torch 2.9+)")


_SOURCE_RX = re.compile(r"(?:^|[\s;&|(])(?:source|\.)\s+[\"']?([^\s;&|\"'<>()]+\.(?:sh|bash))\b", re.M)


def _sourced(tree: Tree, lau: Launcher) -> str | None:
    """Is a launcher meant to be sourced or typed at a prompt (its jobs then belong to the interactive shell,
    whose hang-up reaches them)? Another script of the tree sources it, its own text says `source it`, or it
    `return`s at top level (which only a sourced script can)."""
    if tree._sources is None:  # basename -> the scripts that source a file of that name (read once per tree)
        tree._sources = {}
        for other in tree.launchers:
            if "source" not in other.text and ". " not in other.text:
                continue
            for m in _SOURCE_RX.finditer(other.text):
                tree._sources.setdefault(os.path.basename(m.group(1)), []).append(other.path)
    name = os.path.basename(lau.path)
    by = [o for o in tree._sources.get(name, []) if o != lau.path]
    if by:
        return f"{display_path(by[0])} sources it"
    if lau.path in tree._sources.get(name, []) or re.search(r"\bsource\s+(?:it|this)\b", lau.text):
        return "its own text says to source it"
    if re.search(r"^return\b", lau.text, re.M):
        return "it `return`s at top level, which only a sourced script can"
    return None


def _hup_log(tree: Tree, j: Job) -> str | None:
    """A log in the tree, written by this job, of a run that a SIGHUP killed: proof the hang-up reaches it."""
    for log in tree.logs:
        if log_matches(j, log):
            d = tree.diagnosis(log)
            if d is not None and d.cls == "sighup":
                return log
    return None


def check_unprotected_launch(tree: Tree) -> Iterator[Finding]:
    """What happens to a job when the terminal closes (measured with genuine torchrun jobs, issue 21 item 8):
    torchrun catches SIGHUP even under nohup, so nohup alone never protects it. The hang-up reaches the job when the
    script keeps the terminal's foreground (it `wait`s, or runs the job in the foreground) or when the lines run in
    the interactive shell itself (typed, or a sourced script): an error. A script run as `bash x.sh` that starts
    `nohup ... &` and exits leaves its jobs in an orphaned process group that gets no SIGHUP: a warning that says
    so, since typing the same lines at a prompt kills them. `setsid` is the fix in every case."""
    for lau, j in _jobs(tree):
        if j.hup_safe:
            continue
        via = f" through {os.path.basename(j.wrapper)}" if j.wrapper else ""
        where = f" on {j.remote}" if j.remote else ""
        sourced = _sourced(tree, lau)
        hup_log = _hup_log(tree, j) if j.nohup and j.background and not (j.waited or sourced) else None
        if hup_log:
            sourced = f"its log {hup_log} shows a run of it killed by SIGHUP, so however it is started, the " \
                      f"hang-up reaches it"
        what = f"{j.kind}{via}{where}"
        if j.nohup:
            if not j.background:
                yield Finding("unprotected-launch", ERROR, lau.path, j.line,
                              f"{what} is started under nohup without setsid, in the foreground: the script keeps the "
                              f"terminal, and {_WHY_NOHUP}", _FIX_HUP)
            elif j.waited or sourced:
                why = "the script then waits for it (it stays in the terminal's foreground process group)" \
                    if j.waited else (sourced if hup_log else f"the script is meant to be sourced ({sourced}): the "
                                      f"job belongs to the interactive shell")
                yield Finding("unprotected-launch", ERROR, lau.path, j.line,
                              f"{what} is started under nohup without setsid and {why}: {_WHY_NOHUP}", _FIX_HUP)
            else:
                yield Finding("unprotected-launch", WARNING, lau.path, j.line,
                              f"{what} is started under nohup without setsid: run as `bash {os.path.basename(lau.path)}`"
                              f" and left to exit, the script orphans the job's process group and the terminal's "
                              f"SIGHUP does not reach it; typed at a prompt, sourced, or followed by a `wait`, it "
                              f"dies with the terminal: nohup only sets SIGHUP to 'ignore', and torchrun installs its "
                              f"own SIGHUP handler", _FIX_HUP)
        elif j.background and (j.waited or sourced):
            why = "the script waits for it" if j.waited else f"the script is meant to be sourced ({sourced})"
            yield Finding("unprotected-launch", ERROR, lau.path, j.line,
                          f"{what} is started with '&' and {why}: closing the terminal sends SIGHUP to the "
                          f"terminal's process group, this job included", _FIX_HUP)
        elif j.background:
            yield Finding("unprotected-background", WARNING, lau.path, j.line,
                          f"{what} is started with '&' without nohup or setsid: it dies with the "
                          f"terminal if the shell forwards SIGHUP to it (an interactive shell, huponexit)", _FIX_HUP)


_KILL_WHY = ("kills every process on the host whose command line matches, other users' and other jobs' training "
             "included")


def check_kill_by_name(tree: Tree) -> Iterator[Finding]:
    for lau in tree.launchers:
        if not lau.jobs:
            continue
        for k in lau.kills:
            yield Finding("kill-by-name", WARNING, lau.path, k.line, f"`{k.what[:80]}` {_KILL_WHY}",
                          "kill only this job's own processes: keep its PID (`$!`) or process group and kill that, "
                          "or run jobs under a scheduler / systemd-run that tracks them")


def _pairs(tree: Tree) -> Iterator[tuple[Launcher, Job, Job]]:
    """Jobs that run at the same time; a job started with '&' inside a loop that runs it several times is paired
    with itself (its runs overlap)."""
    for lau in tree.launchers:
        for j in lau.jobs:
            if j.background and j.loop_runs > 1:
                yield lau, j, j
        for a, b in combinations(lau.jobs, 2):
            if concurrent(a, b):
                yield lau, a, b


def _other(a: Job, b: Job) -> str:
    if a is b:
        return f"its other runs ({a.loop_runs} start at once: '&' inside a loop)"
    return f"the job on line {a.line}"


def _per_run(value: str | None, j: Job) -> bool:
    """Does a value change from one loop run to the next (it names a loop variable)?"""
    return bool(value) and any(f"${v}" in value or f"${{{v}" in value for v in j.loop_vars)  # type: ignore[operator]


def _gpus_unknown(j: Job) -> bool:
    return (j.cuda_visible_devices is not None and not j.gpus) or not j.gpus_known


def check_gpu_overlap(tree: Tree) -> Iterator[Finding]:
    for lau, a, b in _pairs(tree):
        if _gpus_unknown(a) or _gpus_unknown(b):
            continue  # a GPU set the text cannot tell (a loop variable, an argument)
        ga, gb = set(a.gpus), set(b.gpus)
        if not ga and not gb:
            shared = "every GPU (neither sets CUDA_VISIBLE_DEVICES)"
        elif not ga or not gb:
            shared = "every GPU the other uses (one of them sets no CUDA_VISIBLE_DEVICES)"
        elif ga & gb:
            shared = _gpu_list(ga & gb)
        else:
            continue
        yield Finding("gpu-overlap", ERROR, lau.path, b.line,
                      f"this job runs at the same time as {_other(a, b)} and shares {shared}",
                      "give each concurrent job its own CUDA_VISIBLE_DEVICES set")


def check_port_collision(tree: Tree) -> Iterator[Finding]:
    for lau, a, b in _pairs(tree):
        same = _same_port(a, b)
        if same:
            port, explicit = same
            src = "both set to it" if explicit else "both left at torchrun's default"
            yield Finding("port-collision", ERROR, lau.path, b.line,
                          f"this job and {_other(a, b)} run at the same time on master port {port} ({src}); "
                          f"the second one dies with EADDRINUSE",
                          "give each concurrent job its own MASTER_PORT / --master_port, or use torchrun --standalone")


def _same_port(a: Job, b: Job) -> tuple[int, bool] | None:
    """(the master port, whether either job names it) when two jobs bind the same one; None when they do not, or
    when a port is picked free or random at launch, or cannot be told from the text."""
    if not _port_known(a) or not _port_known(b):
        return None
    pa, pb = a.master_port or 29500, b.master_port or 29500
    return (pa, a.master_port_explicit or b.master_port_explicit) if pa == pb else None


def _port_known(j: Job) -> bool:
    return j.port == "default" or j.port.isdigit()


def _gpu_list(ids: set[str]) -> str:
    return "GPU " + ",".join(sorted(ids, key=lambda x: (len(x), x)))


def check_log_collision(tree: Tree) -> Iterator[Finding]:
    for lau, a, b in _pairs(tree):
        if a.log and b.log and a.log == b.log and a.log not in NOT_LOGS and not _per_run(a.log, a):
            yield Finding("log-collision", WARNING, lau.path, b.line,
                          f"this job and {_other(a, b)} both write {a.log}: their lines interleave and "
                          f"the diagnosis of one job will read the other's failure",
                          "give each job its own log file")


def _log_path(lau: Launcher, j: Job) -> str | None:
    """Where a job's log lands, as far as the text says (None: a name built at run time, or not a file)."""
    if not j.log or j.log in NOT_LOGS or "$" in j.log or "`" in j.log or _per_run(j.log, j):
        return None
    here = os.path.dirname(os.path.abspath(lau.path))
    base = j.cwd or (os.path.join(here, j.cwd_rel) if j.cwd_rel else here)
    return os.path.normpath(os.path.join(base, j.log))


def check_sibling_launchers(tree: Tree) -> Iterator[Finding]:
    """Launcher scripts side by side in one directory may be started together from several shells; what one script
    cannot see is that its sibling uses the same log, port or GPUs. Only scripts with evidence of running together
    are paired (a warning per script): the directory splits the GPUs or the master ports between its scripts (a
    partition is made for scripts that run at once), or a README/Makefile beside them starts them in parallel.
    Without evidence, at most one summary line per directory, and only when its scripts start their jobs in the
    background (run one after the other from one shell, they overlap)."""
    by_dir: dict[str, list[Launcher]] = {}
    for lau in tree.launchers:
        if lau.jobs:
            by_dir.setdefault(os.path.dirname(os.path.abspath(lau.path)), []).append(lau)
    for d, group in by_dir.items():
        group = sorted(group, key=lambda x: x.path)
        if len(group) < 2:
            continue
        together = _run_together(d, group)
        loose: list[tuple[Launcher, Job, list[str]]] = []
        for k, lb in enumerate(group):
            hits = [(la, a, b, shared) for la in group[:k] for a, b, shared in _collisions(la, lb)[:1]]
            proven = [h for h in hits if (h[0].path, lb.path) in together]
            if proven:
                la, a, b, shared = proven[0]
                others = ", ".join(display_path(h[0].path) for h in proven[1:])
                yield Finding("sibling-collision", WARNING, lb.path, b.line,
                              f"run at the same time as {display_path(la.path)}:{a.line} ({together[(la.path, lb.path)]}),"
                              f" this job shares " + "; ".join(shared) +
                              (f" (it collides with {others} too)" if others else ""),
                              "give each sibling launcher its own log name, MASTER_PORT and CUDA_VISIBLE_DEVICES")
            elif hits:
                loose.extend((h[0], h[2], h[3]) for h in hits)
        if loose and any(j.background for lau in group for j in lau.jobs):
            names = sorted({display_path(x[0].path) for x in loose} |
                           {display_path(lau.path) for lau in group if any(x[1] in lau.jobs for x in loose)})
            what = sorted({w.split(" (")[0].split(":")[0] for x in loose for w in x[2]})
            first = min(loose, key=lambda x: x[0].path)
            yield Finding("sibling-collision", WARNING, first[0].path, None,
                          f"{len(names)} launcher scripts in {display_path(d)} would share {', '.join(what)} if "
                          f"started together ({', '.join(names)}); they start their jobs in the background, so one "
                          f"run right after another overlaps; nothing here says they are run together",
                          "if they are run together, give each its own log name, MASTER_PORT and "
                          "CUDA_VISIBLE_DEVICES")


_TOGETHER_WORDS = re.compile(r"&|\bparallel\b|simultaneous|at the same time|concurrent|side by side|同时|并行", re.I)


def _run_together(d: str, group: list[Launcher]) -> dict[tuple[str, str], str]:
    """Pairs of sibling scripts (by path) with evidence that they run at the same time, and the evidence."""
    out: dict[tuple[str, str], str] = {}

    def pair(a: Launcher, b: Launcher, why: str) -> None:
        out.setdefault((a.path, b.path), why)
        out.setdefault((b.path, a.path), why)

    # a GPU split: scripts pinning GPU sets of which some are disjoint were written to share one host at once; a
    # GPU that three or more scripts claim says they take turns (a script per model, each on whatever was free)
    pinned = [lau for lau in group if lau.jobs and all(j.gpus and not _gpus_unknown(j) for j in lau.jobs)]
    sets = {lau.path: set().union(*(set(j.gpus) for j in lau.jobs)) for lau in pinned}
    claims: dict[str, int] = {}
    for gs in sets.values():
        for g in gs:
            claims[g] = claims.get(g, 0) + 1
    # (every script of the directory takes part: a folder of unrelated scripts, some pinned, is no plan)
    if claims and max(claims.values()) <= 2 and len(pinned) == len(group) and \
            any(not (sets[a.path] & sets[b.path]) for a, b in combinations(pinned, 2)):
        for a, b in combinations(pinned, 2):
            pair(a, b, "the scripts in this directory split the GPUs between them, to run at once")
    # a port split: every script names master ports no other script uses (one odd port among scripts that mostly
    # share one says nothing: they take turns, and one of them was edited once)
    ported = [lau for lau in group if lau.jobs and all(j.master_port_explicit for j in lau.jobs)]
    ports = {lau.path: {j.master_port for j in lau.jobs} for lau in ported}
    port_claims: dict[object, int] = {}
    for ps in ports.values():
        for port in ps:
            port_claims[port] = port_claims.get(port, 0) + 1
    if len(ported) == len(group) and port_claims and max(port_claims.values()) == 1:
        for a, b in combinations(ported, 2):
            pair(a, b, "the scripts in this directory give their jobs different master ports, to run at once")
    # a README or Makefile beside them (or one level up) that starts two of them in parallel
    names = {os.path.basename(lau.path): lau for lau in group}
    for doc_dir in (d, os.path.dirname(d)):
        try:
            entries = sorted(os.listdir(doc_dir))
        except OSError:
            continue
        for e in entries:
            if not re.fullmatch(r"(?i)readme.*|makefile|.*\.md", e):
                continue
            f = os.path.join(doc_dir, e)
            try:
                if not os.path.isfile(f) or os.path.getsize(f) > 1_000_000:
                    continue
                text = open(f, encoding="utf-8", errors="replace").read()
            except OSError:
                continue
            for ln in text.splitlines():
                hit = [n for n in names if n in ln]
                if len(hit) >= 2 and _TOGETHER_WORDS.search(ln):
                    for x, y in combinations(hit, 2):
                        pair(names[x], names[y], f"{e} starts them together")
    return out


def _collisions(la: Launcher, lb: Launcher) -> list[tuple[Job, Job, list[str]]]:
    """What the jobs of two launchers would share if started together: a master port, GPUs, a log file."""
    out = []
    for b in lb.jobs:
        for a in la.jobs:
            if not same_host(a, b) or a.remote or one_multinode_job(a, b):
                continue
            shared = []
            same = _same_port(a, b)
            if same:
                port, explicit = same
                how = "both set to it" if explicit else "both left at the default"
                shared.append(f"master port {port} ({how}): the second dies with EADDRINUSE")
            ga, gb = set(a.gpus), set(b.gpus)
            if ga & gb and not (_gpus_unknown(a) or _gpus_unknown(b)):
                shared.append(_gpu_list(ga & gb))
            log_a = _log_path(la, a)
            if log_a is not None and log_a == _log_path(lb, b):
                shared.append(f"the log {b.log} (run in turn, a '>' redirection erases the earlier run's log, and "
                              f"with it the failure to diagnose)")
            if shared:
                out.append((a, b, shared))
    return out
