"""oomfix: say what really killed a distributed training run, and fix its configs surgically.

The Python API (everything else in the package is internal and may change between releases):

    import oomfix

    d = oomfix.diagnose(["logs/node0.log", "logs/node1.log"])   # -> oomfix.Diagnosis
    if d.is_memory:
        plan = oomfix.plan_apply("logs/node0.log", all_configs=True)   # -> oomfix.Plan (a dry run)
        for edit in plan.edits:                                        # oomfix.FileEdit: path, before, after
            print(edit.path, edit.changes)
        oomfix.write_plan(plan)                   # atomic, journalled; `oomfix undo` restores the files
    result = oomfix.check(["."])                  # -> oomfix.CheckResult, .findings: tuple of oomfix.Finding
    for job in oomfix.jobs("launch.sh"):          # -> tuple of oomfix.Job
        print(job.kind, job.config, job.port_json)

Results are frozen dataclasses; each has a `to_json()` that gives what `--format json` prints. Errors are
subclasses of `oomfix.OomfixError` (`InputError` for a log, config or script that cannot be read, `UsageError`
for a request that cannot be done). Importing `oomfix` is cheap: the engine is imported on the first call.
"""
from __future__ import annotations

import sys
import types
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"

if TYPE_CHECKING:
    import os

    from oomfix.apply import FileEdit, Plan
    from oomfix.check import CheckResult, Finding
    from oomfix.errors import ConfigError, InputError, OomfixError, UsageError
    from oomfix.launcher import Job
    from oomfix.model import CascadeEntry, Diagnosis, Evidence, MemoryInfo, RootCause, RunParams

__all__ = [
    "__version__", "diagnose", "plan_apply", "write_plan", "check", "jobs",
    "Diagnosis", "RootCause", "CascadeEntry", "Evidence", "RunParams", "MemoryInfo", "Plan", "FileEdit",
    "CheckResult", "Finding", "Job", "OomfixError", "InputError", "UsageError", "ConfigError",
]

# the result types, imported when first named (`oomfix.Diagnosis`), so that `import oomfix` stays cheap
_LAZY = {
    "Diagnosis": "oomfix.model", "RootCause": "oomfix.model", "CascadeEntry": "oomfix.model",
    "Evidence": "oomfix.model", "RunParams": "oomfix.model", "MemoryInfo": "oomfix.model",
    "Plan": "oomfix.apply", "FileEdit": "oomfix.apply", "CheckResult": "oomfix.check", "Finding": "oomfix.check",
    "Job": "oomfix.launcher", "OomfixError": "oomfix.errors", "InputError": "oomfix.errors",
    "UsageError": "oomfix.errors", "ConfigError": "oomfix.errors",
}


class _Package(types.ModuleType):
    """`import oomfix.check` (or `from oomfix.check import ...`) binds the submodule to the package attribute of the
    same name; the API functions `oomfix.check` and `oomfix.diagnose` must stay what they are. The submodules are
    still imported and used through `sys.modules` as usual."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in ("check", "diagnose") and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'oomfix' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


def _paths(paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[str]:
    import os

    if isinstance(paths, (str, os.PathLike)):
        return [os.fspath(paths)]
    return [os.fspath(p) for p in paths]


def diagnose(paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], *, config: str | None = None,
             rules_dir: str | None = None) -> Diagnosis:
    """What killed a run: `oomfix diagnose` as a function.

    `paths`: the log files of one job (one per node, or one; "-" reads stdin; gzip is recognised by its bytes).
    `config`: the config the run used, recorded in the result's `run.config`. `rules_dir`: a directory of extra
    rules (same schema as `rules/*.yaml`). Returns a `Diagnosis`: `.cls` (the class: "cuda_oom", "sighup", ...,
    "unknown", "none"), `.confidence`, `.root_cause`, `.cascade`, `.evidence`, `.run`, `.memory`, `.advice`.
    Raises `InputError` for a log that cannot be read, `UsageError` when no log is given.
    """
    from oomfix.diagnose import diagnose_logs

    return diagnose_logs(_paths(paths), config=config, rules_dir=rules_dir)


def plan_apply(log: str | os.PathLike[str] | None = None, *, config: str | None = None, all_configs: bool = False,
               allow_semantic_changes: bool = False, rules_dir: str | None = None, root: str = ".") -> Plan:
    """The next fix for a failed run, as a plan: `oomfix apply` without `--write`. Nothing is written.

    `log`: the run's log (None: the newest `*.log` below `root`). `config`: the config the run used (else found
    from the log). `all_configs`: every sibling config too. `allow_semantic_changes`: allow rungs that change what
    is trained. Returns a `Plan`: `.status` ("edits", "nothing", "advice", "no_rung", "already"), `.rule`, `.why`,
    `.message`, `.edits` (each a `FileEdit` with `.path`, `.before`, `.after`, `.changes`), `.exit_code`.
    Raises `ConfigError` for a config that cannot be found, parsed or edited safely.
    """
    import os

    from oomfix.apply import plan_apply as _plan

    return _plan(os.fspath(log) if log is not None else None, config, all_configs, allow_semantic_changes, rules_dir,
                 root)


def write_plan(plan: Plan, *, root: str = ".", explicit: Sequence[str] = ()) -> str | None:
    """Write a plan's edits (atomic, journalled in `<root>/.oomfix/journal.jsonl`; `oomfix undo` restores them).

    Configs outside `root` are written only when listed in `explicit`. Returns the journal's transaction id, or
    None when there was nothing to write or a concurrent oomfix applied the same log first.
    """
    from oomfix.apply import write_plan as _write

    return _write(plan, root, explicit)


def check(paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] = (".",)) -> CheckResult:
    """The pre-relaunch check, `oomfix check`, over the configs, launcher scripts and logs below `paths`.

    Returns a `CheckResult`: `.findings` (each a `Finding`: `.id`, `.severity` "error" | "warning", `.file`,
    `.line`, `.message`, `.fix`), the counts `.configs`, `.launchers`, `.logs`, and `.exit_code(strict=False)`.
    """
    from oomfix.check import run_check

    return run_check(_paths(paths) or ["."])


def jobs(scripts: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> tuple[Job, ...]:
    """The training jobs launcher scripts start, read the way bash would run them, never executed (`oomfix jobs`).

    Each `Job` has `.file`, `.line`, `.kind` (the launcher: "torchrun", "llamafactory-cli", ...), `.background`,
    `.nohup`, `.protected_by`, `.config`, `.port_json`, `.cuda_visible_devices`, `.nproc`, `.log`, and `.to_json()`.
    Raises `InputError` for a missing script.
    """
    from oomfix.launcher import read_launchers

    return tuple(j for lau in read_launchers(_paths(scripts)) for j in lau.jobs)
