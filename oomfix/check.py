"""`oomfix check`: the pre-relaunch gate. Every mistake of a bad relaunch is visible in the files before it.

Each check is a function that yields `Finding`s; `CHECKS` is the registry, in report order. Inputs are
discovered once (configs, launchers, logs) into a `Tree` (`oomfix/checktree.py`); the checks live by what they
compare: `oomfix/check_configs.py`, `oomfix/check_launches.py`, `oomfix/check_history.py`. This module runs them
and renders the result; it re-exports the names callers import from `oomfix.check`.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from oomfix.check_configs import check_deepspeed, check_global_batch, check_sibling_drift
from oomfix.check_history import check_known_oom_values, check_runs, log_time, unchanged_since
from oomfix.check_launches import (check_gpu_overlap, check_kill_by_name, check_log_collision, check_port_collision,
                                   check_sibling_launchers, check_unprotected_launch)
from oomfix.checktree import (ERROR, WARNING, Finding, Tree, _world, discover, is_supervisor_log, key_line,
                              sibling_groups)
from oomfix.errors import ConfigError, EditRefused

__all__ = [
    "ERROR", "WARNING", "Finding", "Tree", "CheckResult", "discover", "is_supervisor_log", "key_line", "sibling_groups",
    "_world", "check_sibling_drift", "check_global_batch", "check_deepspeed", "check_unprotected_launch",
    "check_kill_by_name", "check_gpu_overlap", "check_port_collision", "check_log_collision", "check_sibling_launchers",
    "log_time", "unchanged_since", "check_known_oom_values", "check_runs", "check_skipped", "CHECKS", "run_check",
    "render_text", "render_github",
]

@dataclass(frozen=True)
class CheckResult:
    findings: tuple[Finding, ...]
    configs: int
    launchers: int
    logs: int

    def exit_code(self, strict: bool = False) -> int:
        bad = [f for f in self.findings if f.severity == ERROR or (strict and f.severity == WARNING)]
        return 1 if bad else 0


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
