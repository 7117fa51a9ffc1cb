"""`oomfix check`: the pre-relaunch gate. Every mistake of a bad relaunch is visible in the files before it.

Each check is a function that yields `Finding`s; `CHECKS` is the registry, in report order. Inputs are
discovered once (configs, launchers, logs) into a `Tree`.
"""
from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any

from oomfix.configs import Config, Launchers, display_path, inside, same_file, walk
from oomfix.dialects import DEEPSPEED, MEMORY_KEYS
from oomfix.errors import ConfigError, EditRefused, InputError, UsageError
from oomfix.launcher import Job, Launcher, concurrent, parse_launcher
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
    _jobs_by_config: Launchers | None = None
    _groups: list[list[Config]] | None = None

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
    for f in walk(paths):
        name = f.name
        if name.endswith((".log", ".log.gz")):
            tree.logs.append(display_path(f))
        elif f.suffix == ".sh":
            try:
                tree.launchers.append(parse_launcher(display_path(f)))
            except InputError:
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
    by_launcher: dict[str, list[str]] = {}
    for c in tree.configs:
        found = tree.job_of(c)
        if found:
            by_launcher.setdefault(found[0].path, []).append(c.path)
    for members in by_launcher.values():
        for a, b in zip(members, members[1:]):
            union(a, b)
    groups: dict[str, list[Config]] = {}
    for c in tree.configs:
        groups.setdefault(find(c.path), []).append(c)
    return [sorted(g, key=lambda c: c.path) for g in groups.values() if len(g) > 1]


# --- the checks -----------------------------------------------------------------------------------------------

def check_sibling_drift(tree: Tree) -> Iterator[Finding]:
    for group in sibling_groups(tree):
        ref = group[0]
        for other in group[1:]:
            same_world = _world(tree, ref) == _world(tree, other)
            for key in _DRIFT_KEYS:
                if key in ("micro_batch", "grad_accum") and not same_world:
                    continue  # different world sizes may justify a different split; the global batch must agree
                a, b = ref.values.get(key), other.values.get(key)
                if key == "zero_config" and ref.zero and other.zero and ref.zero.path and other.zero.path and \
                        same_file(ref.zero.path, other.zero.path):
                    continue
                if a != b and key in ref.values and key in other.values:
                    yield Finding("sibling-drift", ERROR, other.path, _config_key_line(other, key),
                                  f"{_keyname(other, key)} is {b!r} here but {a!r} in its sibling {ref.path}",
                                  "apply the same value to every sibling (`oomfix apply --all-configs` does), or "
                                  "give them different world sizes on purpose")


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
                yield Finding("global-batch-mismatch", ERROR, c.path, _config_key_line(c, "micro_batch"),
                              f"global batch {g} ({w} GPUs x {c.values['micro_batch']} x {c.values['grad_accum']}) "
                              f"differs from {rg} in its sibling {ref.path} ({rw} GPUs x {ref.values['micro_batch']} x "
                              f"{ref.values['grad_accum']})",
                              "siblings train the same model the same way: make world size x micro batch x "
                              "accumulation equal")


def check_deepspeed(tree: Tree) -> Iterator[Finding]:
    for c in tree.configs:
        if c.zero is None:
            continue
        line = _config_key_line(c, "zero_config")
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


def check_unprotected_launch(tree: Tree) -> Iterator[Finding]:
    for lau, j in _jobs(tree):
        if (j.nohup or j.background) and not j.hup_safe:
            how = "nohup" if j.nohup else "'&'"
            via = f" through {os.path.basename(j.wrapper)}" if j.wrapper else ""
            yield Finding("unprotected-launch", ERROR, lau.path, j.line,
                          f"{j.kind}{via} is started under {how} without setsid: {_WHY_NOHUP}",
                          "start it with `setsid nohup CMD > log 2>&1 < /dev/null &`, in tmux/screen, systemd-run or "
                          "a scheduler, or pass `--signals-to-handle SIGTERM,SIGINT,SIGQUIT` to torchrun (torch 2.9+)")


def _pairs(tree: Tree) -> Iterator[tuple[Launcher, Job, Job]]:
    for lau in tree.launchers:
        for a, b in combinations(lau.jobs, 2):
            if concurrent(a, b):
                yield lau, a, b


def check_gpu_overlap(tree: Tree) -> Iterator[Finding]:
    for lau, a, b in _pairs(tree):
        ga, gb = set(a.gpus), set(b.gpus)
        if not ga and not gb:
            shared = "every GPU (neither sets CUDA_VISIBLE_DEVICES)"
        elif not ga or not gb:
            shared = "every GPU the other uses (one of them sets no CUDA_VISIBLE_DEVICES)"
        elif ga & gb:
            shared = "GPU " + ",".join(sorted(ga & gb, key=lambda x: (len(x), x)))
        else:
            continue
        yield Finding("gpu-overlap", ERROR, lau.path, b.line,
                      f"this job runs at the same time as the job on line {a.line} and shares {shared}",
                      "give each concurrent job its own CUDA_VISIBLE_DEVICES set")


def check_port_collision(tree: Tree) -> Iterator[Finding]:
    for lau, a, b in _pairs(tree):
        if a.picks_free_port or b.picks_free_port:
            continue
        pa, pb = a.master_port or 29500, b.master_port or 29500
        if pa == pb:
            src = "both left at torchrun's default" if not (a.master_port_explicit or b.master_port_explicit) else \
                "both set to it"
            yield Finding("port-collision", ERROR, lau.path, b.line,
                          f"this job and the job on line {a.line} run at the same time on master port {pa} ({src}); "
                          f"the second one dies with EADDRINUSE",
                          "give each concurrent job its own MASTER_PORT / --master_port, or use torchrun --standalone")


def check_log_collision(tree: Tree) -> Iterator[Finding]:
    for lau, a, b in _pairs(tree):
        if a.log and b.log and a.log == b.log:
            yield Finding("log-collision", WARNING, lau.path, b.line,
                          f"this job and the job on line {a.line} both write {a.log}: their lines interleave and "
                          f"the diagnosis of one job will read the other's failure",
                          "give each job its own log file")


def _logs_of_configs(tree: Tree) -> dict[str, Config]:
    """Log file (real path, or bare name when the launcher's path does not resolve) -> the config its job runs."""
    out: dict[str, Config] = {}
    for c in tree.configs:
        found = tree.job_of(c)
        if found and found[1].log:
            lau, j = found
            target = os.path.realpath(os.path.join(os.path.dirname(lau.path), j.log))
            out.setdefault(target, c)
            out.setdefault("name:" + os.path.basename(j.log), c)
    return out


def _config_of_log(tree: Tree, log: str, d: Diagnosis, by_log: dict[str, Config]) -> Config | None:
    hit = by_log.get(os.path.realpath(log)) or by_log.get("name:" + os.path.basename(log))
    if hit is not None:
        return hit
    ref = d.run.config
    if ref:
        for c in tree.configs:
            if c.path == ref or c.path.endswith("/" + ref.lstrip("./")) or \
                    (os.path.isfile(ref) and same_file(c.path, ref)):
                return c
    return None


def _newest_logs(tree: Tree) -> dict[str, tuple[str, Diagnosis]]:
    newest: dict[str, tuple[float, str, Diagnosis]] = {}
    by_log = _logs_of_configs(tree)
    for log in tree.logs:
        d = tree.diagnosis(log)
        if d is None:
            continue
        cfg = _config_of_log(tree, log, d, by_log)
        if cfg is None:
            continue
        t = os.stat(log).st_mtime
        if cfg.path not in newest or t > newest[cfg.path][0]:
            newest[cfg.path] = (t, log, d)
    return {k: (v[1], v[2]) for k, v in newest.items()}


def _remediated(log: str, config: str) -> bool:
    """An `oomfix apply --write` of this log that touched this config (and was not undone)."""
    from oomfix.journal import Journal, file_sha256

    sha = file_sha256(log)
    for root in [Path(log).resolve().parent, *Path(log).resolve().parents]:
        j = Journal(root)
        if j.path.exists():
            tx = j.applied(sha) if sha else None
            return tx is not None and any(same_file(f["file"], config) for f in tx["files"])
    return False


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
            unchanged = not differs and os.stat(cfg.path).st_mtime <= os.stat(log).st_mtime \
                and not _remediated(log, cfg.path)
            if unchanged:
                yield Finding("unremediated-failure", ERROR, cfg.path, _config_key_line(cfg, "micro_batch"),
                              f"{log} died of {d.cls} and this config still has the memory settings that run used",
                              f"`oomfix apply {log} --all-configs` proposes the next fix")
                continue
        if differs:
            what = ", ".join(f"{_keyname(cfg, k)} {o} in the run, {n} on disk" for k, (o, n) in differs.items())
            yield Finding("stale-run", WARNING, cfg.path, _config_key_line(cfg, next(iter(differs))),
                          f"{log} ran with different values than this config ({what}): the run predates an edit or "
                          f"ran another file", "relaunch to get a log of the current config, or check which file ran")


CHECKS: tuple[tuple[str, Callable[[Tree], Iterator[Finding]]], ...] = (
    ("sibling-drift", check_sibling_drift),
    ("global-batch-mismatch", check_global_batch),
    ("deepspeed-mismatch", check_deepspeed),
    ("unprotected-launch", check_unprotected_launch),
    ("gpu-overlap", check_gpu_overlap),
    ("port-collision", check_port_collision),
    ("log-collision", check_log_collision),
    ("runs", check_runs),
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
    def esc(s: str) -> str:
        return s.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")

    lines = []
    for f in res.findings:
        level = "error" if f.severity == ERROR else "warning"
        loc = f"file={f.file}" + (f",line={f.line}" if f.line else "")
        lines.append(f"::{level} {loc},title=oomfix {f.id}::{esc(f.message + ' -- fix: ' + f.fix)}")
    return "\n".join(lines) + ("\n" if lines else "")
