"""`oomfix check`: the pre-relaunch gate. Every mistake of a bad relaunch is visible in the files before it.

Each check is a function that yields `Finding`s; `CHECKS` is the registry, in report order. Inputs are
discovered once (configs, launchers, logs) into a `Tree`.
"""
from __future__ import annotations

import os
import re
import stat
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any

from oomfix.configs import Config, Launchers, display_path, inside, same_file, small, walk
from oomfix.dialects import DEEPSPEED, MEMORY_KEYS
from oomfix.errors import ConfigError, EditRefused, InputError, UsageError
from oomfix.launcher import (NOT_LOGS, Job, Launcher, concurrent, git_root, log_matches, one_multinode_job,
                             parse_launcher, same_host)
from oomfix.model import MEMORY_CLASSES, Diagnosis

ERROR, WARNING = "error", "warning"
_DRIFT_KEYS = MEMORY_KEYS + ("zero_stage", "offload")
_WHY_NOHUP = ("nohup only sets SIGHUP to 'ignore', and torchrun installs its own SIGHUP handler, so the job still "
              "dies when the terminal closes")


@dataclass(frozen=True)
class Finding:
    id: str
    severity: str
    file: str
    line: int | None
    message: str
    fix: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Tree:
    configs: list[Config] = field(default_factory=list)
    launchers: list[Launcher] = field(default_factory=list)
    logs: list[str] = field(default_factory=list)
    _diagnoses: dict[str, Diagnosis | None] = field(default_factory=dict)
    root: str = "."
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, why): not read, said as a warning
    _jobs_by_config: Launchers | None = None
    _sources: dict[str, list[str]] | None = None
    _groups: list[list[Config]] | None = None
    _log_jobs: list[tuple[Config, Job]] | None = None

    def job_of(self, cfg: Config) -> tuple[Launcher, Job] | None:
        """The launcher job that starts a config (indexed once: checks ask for every config many times)."""
        if self._jobs_by_config is None:
            self._jobs_by_config = Launchers(self.launchers)
        return self._jobs_by_config.job_of(cfg.path)

    def diagnosis(self, log: str) -> Diagnosis | None:
        if log not in self._diagnoses:
            from oomfix.classify import diagnose

            try:
                self._diagnoses[log] = diagnose([log])
            except InputError:
                self._diagnoses[log] = None
        return self._diagnoses[log]


@dataclass(frozen=True)
class CheckResult:
    findings: tuple[Finding, ...]
    configs: int
    launchers: int
    logs: int

    def exit_code(self, strict: bool = False) -> int:
        bad = [f for f in self.findings if f.severity == ERROR or (strict and f.severity == WARNING)]
        return 1 if bad else 0


# --- discovery -------------------------------------------------------------------------------------------------

def discover(paths: Sequence[str]) -> Tree:
    from oomfix.configs import load_config

    tree = Tree(root=os.path.commonpath([os.path.abspath(p) for p in paths]) if paths else ".")
    if os.path.isfile(tree.root):
        tree.root = os.path.dirname(tree.root)
    for p in paths:
        if not os.path.exists(p):
            raise UsageError(f"{p}: no such file or directory")
    # a file named on the command line is read whatever its name (`oomfix check slurm-2859.out train_log.txt`): a
    # log the user points at is not passed over because it does not end in .log
    named = {os.path.abspath(p) for p in paths if os.path.isfile(p)}
    for f in walk(paths):
        name = f.name
        if not name.endswith((".log", ".log.gz", ".sh", ".yaml", ".yml", ".json")):
            if os.path.abspath(f) not in named:
                continue
            name += ".log"  # (read as a log below)
        try:
            regular = stat.S_ISREG(os.stat(f).st_mode)
        except OSError:
            continue
        if not regular:
            # a FIFO or a device (a /dev/zero symlink) named like a log, launcher or config: opening it would
            # block or never end
            tree.skipped.append((display_path(f), "not a regular file"))
            continue
        if name.endswith((".log", ".log.gz")):
            if is_supervisor_log(str(f)):
                continue  # `oomfix run --detach`'s own log is not a training log
            tree.logs.append(display_path(f))
        elif f.suffix == ".sh":
            try:
                tree.launchers.append(parse_launcher(display_path(f)))
            except InputError as e:
                tree.skipped.append((display_path(f), str(e).split(": ", 1)[-1]))
                continue
        elif f.suffix in (".yaml", ".yml", ".json"):
            if name.startswith(".") or name in (".pre-commit-hooks.yaml", ".pre-commit-config.yaml"):
                continue
            try:
                with open(f, "rb") as fh:
                    head = fh.read(65536)
            except OSError:
                continue
            if not _could_be_training_config(head):
                continue
            path = display_path(f)
            try:
                cfg = load_config(path)
            except ConfigError as e:
                if "not a training config" in str(e):
                    continue
                raise
            if cfg.dialect is not DEEPSPEED:
                tree.configs.append(cfg)
    return tree


_SUPERVISOR_LINE = re.compile(rb"^oomfix run: ", re.M)


def is_supervisor_log(path: str) -> bool:
    """The log `oomfix run --detach` writes for itself (supervise.supervisor_log: `<base>-supervisor.log`): its own
    `oomfix run: ...` lines around the job's output, which the attempt logs hold already. Recognised by those lines
    (whatever the name) or by the name."""
    if re.search(r"-supervisor\.log(\.gz)?$", path):
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(1 << 16)
            if len(head) == 1 << 16:
                f.seek(-(1 << 16), os.SEEK_END)
                head += f.read()
    except OSError:
        return False
    return head[:2] != b"\x1f\x8b" and _SUPERVISOR_LINE.search(head) is not None


_CONFIG_HINTS = re.compile(rb"per_device_train_batch_size|micro_batch_size|gradient_accumulation_steps|"
                           rb"batch_size|finetuning_type|model_name_or_path|base_model")


def _could_be_training_config(head: bytes) -> bool:
    # cheap sniff before a full parse: CI workflows, docker-compose files and the like are not read further
    return bool(_CONFIG_HINTS.search(head))


# --- helpers ---------------------------------------------------------------------------------------------------

def key_line(text: str, key: str) -> int | None:
    m = re.search(rf"^[ \t]*[\"']?{re.escape(key)}[\"']?[ \t]*:", text, re.M)
    return text.count("\n", 0, m.start()) + 1 if m else None


def _config_key_line(cfg: Config, canonical: str) -> int | None:
    path = cfg.dialect.path(canonical) or cfg.dialect.path("zero_config") if canonical in ("zero_stage", "offload") \
        else cfg.dialect.path(canonical)
    return key_line(cfg.text, path[-1]) if path else None


def _jobs(tree: Tree) -> list[tuple[Launcher, Job]]:
    return [(lau, j) for lau in tree.launchers for j in lau.jobs]


def _world(tree: Tree, cfg: Config) -> int | None:
    found = tree.job_of(cfg)
    return found[1].world_size if found else None


def sibling_groups(tree: Tree) -> list[list[Config]]:
    """Connected groups: same directory and identity, or started side by side by one launcher."""
    if tree._groups is None:
        tree._groups = _sibling_groups(tree)
    return tree._groups


def _sibling_groups(tree: Tree) -> list[list[Config]]:
    parent = {c.path: c.path for c in tree.configs}

    def find(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(a: str, b: str) -> None:
        parent[find(a)] = find(b)

    by_key: dict[tuple[Any, ...], str] = {}
    for c in tree.configs:
        key = (str(Path(c.path).resolve().parent), c.identity)
        if key in by_key:
            union(c.path, by_key[key])
        else:
            by_key[key] = c.path
    # a launcher is evidence only when it starts the configs side by side; one after the other is a sweep or a
    # pipeline of stages, whose values differ on purpose
    by_launcher: dict[str, list[tuple[Config, Job]]] = {}
    for c in tree.configs:
        found = tree.job_of(c)
        if found:
            by_launcher.setdefault(found[0].path, []).append((c, found[1]))
    for members in by_launcher.values():
        for (ca, ja), (cb, jb) in combinations(members, 2):
            if concurrent(ja, jb) or (ca.identity == cb.identity and
                                      Path(ca.path).resolve().parent == Path(cb.path).resolve().parent):
                union(ca.path, cb.path)
    groups: dict[str, list[Config]] = {}
    for c in tree.configs:
        groups.setdefault(find(c.path), []).append(c)
    return [sorted(g, key=lambda c: c.path) for g in groups.values() if len(g) > 1]


# --- the checks -----------------------------------------------------------------------------------------------

def _shown(v: Any) -> str:
    return "unset" if v is None else repr(v)


def _evidence(tree: Tree, a: Config, b: Config) -> tuple[str, str]:
    """How sure two configs are siblings: started side by side by one launcher (an error when they drift), or
    only alike (same directory, model, dataset and stage: a warning that says so)."""
    ja, jb = tree.job_of(a), tree.job_of(b)
    if ja and jb and same_file(ja[0].path, jb[0].path):
        if concurrent(ja[1], jb[1]):
            return ERROR, f"{ja[0].path} starts both side by side"
        return WARNING, (f"{ja[0].path} starts them one after the other (lines {ja[1].line} and {jb[1].line}), "
                         f"which a sweep of deliberate variants does too")
    return WARNING, ("grouped because they sit in one directory with the same model, dataset and stage; no "
                     "launcher starts them together. Mark a deliberate variant `# oomfix: standalone`")


def _strategy(c: Config) -> tuple[Any, ...]:
    """How a config spreads the model over the GPUs: DeepSpeed (which file or preset), FSDP, or plain DDP."""
    d = c.data if isinstance(c.data, dict) else {}
    return (c.values.get("zero_config"), bool(d.get("fsdp") or d.get("fsdp_config") or d.get("fsdp_version")))


# keys every copy of a job sets to its own value: where it writes, what it is called, how it is logged
_PER_JOB_KEYS = re.compile(r"output_dir|run_name|logging_dir|wandb_\w+|hub_model_id|seed|data_seed|resume\w*|"
                           r"save_steps|logging_steps|eval_steps|save_total_limit|report_to|overwrite\w*|"
                           r"dataset_prepared_path|tokenized_path|cache_dir|\w*_port|master_\w+|plot_loss|"
                           r"save_only_model|ddp_timeout|push_to_hub|special_tokens|val_set_size")


def _variant_keys(a: Config, b: Config) -> list[str]:
    """Top-level keys, other than the memory settings and the per-job ones, on which two alike configs differ:
    two copies of one job differ only in those (the origin story's siblings differ in output_dir and in the memory
    edit); a different optimizer, sequence length, quantization or mode makes a deliberate variant."""
    da = a.data if isinstance(a.data, dict) else {}
    db = b.data if isinstance(b.data, dict) else {}
    memory = {p[0] for c in (a, b) for k in _DRIFT_KEYS + ("zero_config",) if (p := c.dialect.path(k))}
    out = []
    for k in set(da) | set(db):
        if k in memory or _PER_JOB_KEYS.fullmatch(str(k)):
            continue
        if not (small(da.get(k)) and small(db.get(k))) or da.get(k) != db.get(k):
            out.append(str(k))
    return sorted(out)


def _explicit(c: Config, key: str) -> bool:
    from oomfix.dialects import is_explicit

    return isinstance(c.data, dict) and is_explicit(c.data, c.dialect, key)


def check_sibling_drift(tree: Tree) -> Iterator[Finding]:
    for group in sibling_groups(tree):
        ref = group[0]
        for other in group[1:]:
            severity, why = _evidence(tree, ref, other)
            if severity != ERROR and (_strategy(ref) != _strategy(other) or _variant_keys(ref, other)):
                continue  # alike, but another experiment: a different strategy, optimizer, data length, ...
            same_world = _world(tree, ref) == _world(tree, other)
            for key in _DRIFT_KEYS:
                if key in ("micro_batch", "grad_accum") and not same_world:
                    continue  # different world sizes may justify a different split; the global batch must agree
                a, b = ref.values.get(key), other.values.get(key)
                if key == "zero_config" and ref.zero and other.zero and ref.zero.path and other.zero.path and \
                        same_file(ref.zero.path, other.zero.path):
                    continue
                if key in ("zero_stage", "offload"):
                    explicit = ref.zero is not None and other.zero is not None
                else:
                    explicit = _explicit(ref, key) and _explicit(other, key)
                if severity != ERROR and not explicit:
                    continue  # one of them leaves it to the framework: nothing written drifted
                if a != b and key in ref.values and key in other.values:
                    yield Finding("sibling-drift", severity, other.path, _config_key_line(other, key),
                                  f"{_keyname(other, key)} is {_shown_in(other, key)} here but {_shown_in(ref, key)} "
                                  f"in its sibling {ref.path} ({why})",
                                  "`oomfix apply --align-siblings` moves every drifted sibling to the lower-memory "
                                  "split (no log needed), or give them different world sizes on purpose")


def _shown_in(cfg: Config, key: str) -> str:
    """A config's value as its file has it: a key it does not set is "unset", with the framework's default."""
    v = cfg.values.get(key)
    if key not in ("zero_stage", "offload") and not _explicit(cfg, key):
        return "unset" if v is None else f"unset (the default, {v!r})"
    return _shown(v)


def _keyname(cfg: Config, canonical: str) -> str:
    p = cfg.dialect.path(canonical)
    return ".".join(p) if p else canonical


def check_global_batch(tree: Tree) -> Iterator[Finding]:
    for group in sibling_groups(tree):
        sized = []
        for c in group:
            w, m, a = _world(tree, c), c.values.get("micro_batch"), c.values.get("grad_accum")
            if isinstance(w, int) and isinstance(m, int) and isinstance(a, int):
                sized.append((c, w, w * m * a))
        if len(sized) < 2:
            continue
        ref, rw, rg = sized[0]
        for c, w, g in sized[1:]:
            if g != rg:
                severity, why = _evidence(tree, ref, c)
                if severity != ERROR and (_strategy(ref) != _strategy(c) or _variant_keys(ref, c)):
                    continue  # a deliberate variant (see check_sibling_drift)
                yield Finding("global-batch-mismatch", severity, c.path, _config_key_line(c, "micro_batch"),
                              f"global batch {g} ({w} GPUs x {c.values['micro_batch']} x {c.values['grad_accum']}) "
                              f"differs from {rg} in its sibling {ref.path} ({rw} GPUs x {ref.values['micro_batch']} x "
                              f"{ref.values['grad_accum']}; {why})",
                              "siblings train the same model the same way: make world size x micro batch x "
                              "accumulation equal")


def check_deepspeed(tree: Tree) -> Iterator[Finding]:
    for c in tree.configs:
        if c.zero is None:
            continue
        line = _config_key_line(c, "zero_config")
        if c.zero.path is None and c.zero.preset == "axolotl-fetch":
            yield Finding("deepspeed-mismatch", WARNING, c.path, line,
                          f"deepspeed: {c.zero.ref} is one of axolotl's bundled files, not in this tree; axolotl "
                          f"reads it from the directory it runs in", "run `axolotl fetch deepspeed_configs` there, "
                          "or commit the file")
            continue
        if c.zero.path is None and c.zero.preset:
            continue  # the framework's own bundled file (batch keys "auto"): nothing here to disagree with
        if c.zero.path is None:
            yield Finding("deepspeed-mismatch", ERROR, c.path, line,
                          f"the DeepSpeed config {c.zero.ref!r} does not exist (relative to here, the config's folder "
                          f"or its parents)", "fix the path in the deepspeed: key")
            continue
        if not inside(c.zero.path, tree.root):
            yield Finding("deepspeed-mismatch", WARNING, c.path, line,
                          f"deepspeed: {c.zero.ref} resolves outside the tree being checked, to {c.zero.path}; "
                          f"it was read from there", "keep DeepSpeed configs inside the project, or check from the "
                          "directory they are relative to")
        if c.zero.problem:
            yield Finding("deepspeed-mismatch", ERROR, c.path, line, c.zero.problem,
                          "remove the comments, trailing commas and BOM from the DeepSpeed config")
        b = c.zero.batch
        w = _world(tree, c)
        m, a = c.values.get("micro_batch"), c.values.get("grad_accum")
        checks = [("train_micro_batch_size_per_gpu", m), ("gradient_accumulation_steps", a)]
        if isinstance(w, int) and isinstance(m, int) and isinstance(a, int):
            checks.append(("train_batch_size", w * m * a))
        for key, want in checks:
            if key in b and want is not None and b[key] != want:
                yield Finding("deepspeed-mismatch", ERROR, c.path, line,
                              f"{display_path(c.zero.path)} sets {key}: {b[key]!r} but this config implies {want}; "
                              f"HF Trainer raises a mismatch error at start-up",
                              f'set {key} to "auto" in the DeepSpeed config, or make the numbers agree')


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


def check_skipped(tree: Tree) -> Iterator[Finding]:
    """Files named like launchers, configs or logs that were not read (a FIFO, a device, a script past the
    reader's budgets): said, so a gate that passes does not hide what it could not see."""
    for path, why in tree.skipped:
        yield Finding("skipped-file", WARNING, path, None, f"not checked: {why}",
                      "make it a regular file of reasonable size and nesting, or remove it")


CHECKS: tuple[tuple[str, Callable[[Tree], Iterator[Finding]]], ...] = (
    ("sibling-drift", check_sibling_drift),
    ("global-batch-mismatch", check_global_batch),
    ("deepspeed-mismatch", check_deepspeed),
    ("unprotected-launch", check_unprotected_launch),
    ("gpu-overlap", check_gpu_overlap),
    ("port-collision", check_port_collision),
    ("log-collision", check_log_collision),
    ("sibling-collision", check_sibling_launchers),
    ("kill-by-name", check_kill_by_name),
    ("runs", check_runs),
    ("known-oom-values", check_known_oom_values),
    ("skipped-file", check_skipped),
)


def run_check(paths: Sequence[str]) -> CheckResult:
    tree = discover(paths or ["."])
    findings: list[Finding] = []
    for _name, fn in CHECKS:
        try:
            findings.extend(fn(tree))
        except EditRefused as e:
            raise ConfigError(str(e)) from None
    findings.sort(key=lambda f: (f.file, f.line or 0, f.id))
    return CheckResult(tuple(findings), len(tree.configs), len(tree.launchers), len(tree.logs))


def render_text(res: CheckResult) -> str:
    out = []
    current = None
    for f in res.findings:
        if f.file != current:
            current = f.file
            out.append(f.file)
        loc = f":{f.line}" if f.line else ""
        out.append(f"  {f.file}{loc}: {f.severity}: [{f.id}] {f.message}")
        out.append(f"      fix: {f.fix}")
    errors = sum(f.severity == ERROR for f in res.findings)
    warnings = sum(f.severity == WARNING for f in res.findings)
    out.append(f"{errors} error(s), {warnings} warning(s) in {res.configs} config(s), {res.launchers} launcher(s), "
               f"{res.logs} log(s)")
    return "\n".join(out) + "\n"


def render_github(res: CheckResult) -> str:
    from oomfix.report import github_command

    lines = []
    for f in res.findings:
        props = {"file": f.file, "line": str(f.line) if f.line else None, "title": f"oomfix {f.id}"}
        lines.append(github_command("error" if f.severity == ERROR else "warning", props,
                                    f.message + " -- fix: " + f.fix))
    return "\n".join(lines) + ("\n" if lines else "")
