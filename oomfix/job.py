"""What a launcher script starts, as data: a Job (one training command), a Hazard (a command that kills other jobs'
processes) and a Launcher (one script's jobs and hazards), read by oomfix/launcher.py.

For each job we keep what the pre-relaunch checks and the launcher fixes need: its environment, whether it runs in
the background, what protects it from SIGHUP, its config, master port, GPUs, process count and log file, and the line
it starts on.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any


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
