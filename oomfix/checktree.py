"""What `oomfix check` reads, and the words its checks share: the project tree discovered once (configs,
launcher scripts, logs: `discover`), a `Finding`, and the helpers every check family uses (sibling groups, the line
of a config key, a config's world size).

The checks themselves live by what they compare: `oomfix/check_configs.py` (configs against their siblings and
their DeepSpeed file), `oomfix/check_launches.py` (launcher scripts: hang-ups, shared GPUs, ports and logs),
`oomfix/check_history.py` (configs against the runs they had); `oomfix/check.py` runs them in report order.
"""
from __future__ import annotations

import os
import re
import stat
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any

from oomfix.configs import Config, Launchers, display_path, walk
from oomfix.dialects import DEEPSPEED
from oomfix.errors import ConfigError, InputError, UsageError
from oomfix.launcher import Job, Launcher, concurrent, parse_launcher
from oomfix.model import Diagnosis

ERROR, WARNING = "error", "warning"


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


def _explicit(c: Config, key: str) -> bool:
    from oomfix.dialects import is_explicit

    return isinstance(c.data, dict) and is_explicit(c.data, c.dialect, key)


def _keyname(cfg: Config, canonical: str) -> str:
    p = cfg.dialect.path(canonical)
    return ".".join(p) if p else canonical
