"""Verdicts: what one attempt's end means to a scheduler, as an exit code it can map to "retry" or "stop".

`oomfix run --once` and `oomfix verdict LOG` exit with one of these codes; `verdict_of_log` is `oomfix verdict LOG`,
the verdict of a log the scheduler's own step produced. The codes are chosen so that the
schedulers' own defaults already do the right thing:
- Kubeflow (`restartPolicy: ExitCode`) treats 1-127 as permanent and 128-255 as retryable (130, 137, 143 signals,
  138 "user-defined retryable"): `fixed` is 138 and `outside` is 143; `permanent` and `no-rung` are below 128.
- Kubernetes `podFailurePolicy`, SkyPilot `recover_on_exit_codes`, SLURM `scontrol requeue`: the snippets under
  docs/schedulers/ map exactly this table (tests/test_verdicts.py parses them and checks each mapping).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from oomfix.model import MEMORY_CLASSES, Diagnosis

if TYPE_CHECKING:
    from oomfix.child import Terminal
    from oomfix.supervise import RunOptions


@dataclass(frozen=True)
class Verdict:
    """One row of the table: a name, the exit code a scheduler maps, and whether it should start the job again."""

    name: str
    exit_code: int
    retry: bool  # a scheduler should start the job again
    meaning: str


TRAINED = Verdict("trained", 0, False, "the job finished; nothing to do")
FIXED = Verdict("fixed", 138, True, "a fix was applied (the next rung of the ladder, a free master port, the Flight "
                                    "Recorder for an NCCL timeout): relaunch, the next attempt picks it up")
OUTSIDE = Verdict("outside", 143, True, "stopped from outside (preemption, time limit, SIGTERM/SIGINT/SIGHUP to the "
                                        "job or the supervisor): relaunch the same config, resuming if you can")
PERMANENT = Verdict("permanent", 3, False, "a failure a relaunch cannot fix (a Python exception, a segfault, a CUDA "
                                           "or NCCL error, an unknown failure): do not retry; fix the cause")
NO_RUNG = Verdict("no-rung", 4, False, "a memory failure with no rung left on its ladder, or no relaunch left "
                                       "(--retries): do not retry; a person must decide (--allow-semantic-changes, "
                                       "more GPUs, a smaller model)")
ERROR = Verdict("error", 2, False, "oomfix itself could not run (usage or input error, one line on stderr)")

TABLE: tuple[Verdict, ...] = (TRAINED, FIXED, OUTSIDE, PERMANENT, NO_RUNG, ERROR)
BY_NAME = {v.name: v for v in TABLE}
BY_CODE = {v.exit_code: v for v in TABLE}
RETRYABLE_CODES = tuple(v.exit_code for v in TABLE if v.retry)
STOP_CODES = tuple(v.exit_code for v in TABLE if not v.retry and v.exit_code != 0)

# the job was killed from outside: the same config is fine, run it again
OUTSIDE_CLASSES = frozenset({"sighup", "sigterm"})
# failures a rung or a relaunch-time setting can remedy
REMEDIABLE_CLASSES = frozenset(MEMORY_CLASSES) | {"nan_loss", "port_in_use", "nccl_timeout"}


def for_class_without_remedy(cls: str | None) -> Verdict:
    """The verdict of a failed attempt that got no fix: outside stops are retryable, memory classes ran out of
    rungs, everything else is permanent."""
    if cls in OUTSIDE_CLASSES:
        return OUTSIDE
    if cls in MEMORY_CLASSES or cls == "nan_loss":
        return NO_RUNG
    return PERMANENT


def render_table_markdown() -> str:
    """The table docs/schedulers.md shows (tests/test_verdicts.py checks the doc has it)."""
    rows = ["| exit code | verdict | retry | meaning |", "|---|---|---|---|"]
    for v in TABLE:
        rows.append(f"| {v.exit_code} | `{v.name}` | {'yes' if v.retry else 'no'} | {v.meaning} |")
    return "\n".join(rows) + "\n"


# --- `oomfix verdict LOG`: the verdict of a log the scheduler's own step produced ---------------------------------

@dataclass(frozen=True)
class LogVerdict:
    """What LOG means to a scheduler, and the fix behind it (applied when `written`)."""

    verdict: Verdict
    diagnosis: Diagnosis
    reason: str
    rule: str | None = None
    files: tuple[str, ...] = ()
    written: bool = False
    next_env: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The stable JSON form (`oomfix verdict --format json`)."""
        return {"verdict": self.verdict.name, "exit_code": self.verdict.exit_code, "retry": self.verdict.retry,
                "class": self.diagnosis.cls, "rule": self.rule, "files": list(self.files), "written": self.written,
                "reason": self.reason, "next_env": dict(self.next_env)}


def render_text(v: LogVerdict) -> str:
    """`oomfix verdict`'s text: the verdict, the class, and why."""
    return (f"verdict: {v.verdict.name} (exit {v.verdict.exit_code}, retry: {'yes' if v.verdict.retry else 'no'})\n"
            f"class: {v.diagnosis.cls}\n{v.reason}\n")


def verdict_of_log(log: str, opts: RunOptions, write: bool = False, root: str = ".",
                   term: Terminal | None = None) -> LogVerdict:
    """Diagnose LOG and say what it means to a scheduler. Dry run by default (the verdict the fix would give); with
    `write` the fix is applied exactly as `run --once` applies it, and the verdict is recorded in the ledger under
    the run id (so that the next attempt sets what it must, e.g. a free port or the Flight Recorder)."""
    from oomfix import flightrec
    from oomfix.apply import plan_apply
    from oomfix.child import Terminal
    from oomfix.diagnose import diagnose_logs
    from oomfix.remedy import FR_RULE
    from oomfix.supervise import Supervisor, default_run_id

    d = diagnose_logs([log], config=opts.config, rules_dir=opts.rules_dir)
    if d.cls == "none":
        return LogVerdict(TRAINED, d, "the log shows no failure")
    if opts.run_id is None:
        opts = replace(opts, run_id=default_run_id())
    if write:
        sup = Supervisor(replace(opts, once=True), root, term or Terminal(2, 2))
        rem, rec = sup.record_verdict(log, d)
        return LogVerdict(rem.verdict, d, rem.why or f"applied {rem.rule}", rem.rule, rec.files, bool(rem.files),
                          dict(rec.next_env))
    if d.cls == "port_in_use":
        return LogVerdict(FIXED, d, "relaunch on a free port (`--write` records MASTER_PORT for the next attempt)")
    if d.cls == "nccl_timeout":
        dumps = flightrec.find_dumps(log)
        if dumps:
            return LogVerdict(PERMANENT, d, flightrec.render_text(flightrec.analyze(dumps)).rstrip("\n"))
        return LogVerdict(FIXED, d, "relaunch with the Flight Recorder on: "
                                    + " ".join(f"{k}={v}" for k, v in flightrec.relaunch_env(log).items()),
                          FR_RULE, next_env=flightrec.relaunch_env(log))
    if d.cls not in MEMORY_CLASSES and d.cls != "nan_loss":
        v = for_class_without_remedy(d.cls)
        return LogVerdict(v, d, f"{d.cls}: {v.meaning}")
    plan = plan_apply(log, opts.config, opts.all_configs, opts.allow_semantic, opts.rules_dir, root=root)
    if plan.status in ("edits", "already"):
        return LogVerdict(FIXED, d, plan.message or f"rule {plan.rule} (dry run: `--write` applies it)",
                          plan.rule, tuple(e.path for e in plan.edits))
    v = NO_RUNG if plan.status == "no_rung" else PERMANENT
    return LogVerdict(v, d, plan.message or v.meaning)
