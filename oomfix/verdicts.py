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

import os
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from oomfix.model import MEMORY_CLASSES, Diagnosis

if TYPE_CHECKING:
    from oomfix.child import Terminal
    from oomfix.ledger import Attempt
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
                                        "job or the supervisor, a first bare SIGKILL), or a log that ends with "
                                        "neither a finish nor a failure (stopped, or cut): relaunch the same config, "
                                        "resuming if you can")
PERMANENT = Verdict("permanent", 3, False, "a failure a relaunch cannot fix (a Python exception, a segfault, a CUDA "
                                           "or NCCL error, an unknown failure, a second bare SIGKILL in a row): do "
                                           "not retry; fix the cause")
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


# signals a person or a scheduler sends to stop a job (a time limit, a preemption, `scancel`, Ctrl-C, a closed
# terminal, SLURM's --signal warning): a job killed by one of them was stopped from outside
STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2})
SIGKILL_STATUS = 128 + signal.SIGKILL


def _bare_sigkill(d: Diagnosis, status: int | None) -> bool:
    """Killed with SIGKILL, and nothing in the log says by whom: classify.py's low-confidence host_oom (a bare
    SIGKILL, no OOM-killer line), or a job whose own exit status is 137 with no failure in its log."""
    return (d.cls == "host_oom" and d.confidence == "low") or (d.cls == "none" and status == SIGKILL_STATUS)


def _was_bare_sigkill(a: Attempt) -> bool:
    return a.verdict == OUTSIDE.name and (a.exit_code == SIGKILL_STATUS or a.cls == "host_oom")


def unexplained_end(d: Diagnosis, status: int | None, done: Sequence[Attempt] = ()) -> tuple[Verdict, str] | None:
    """The verdict of an attempt whose log names no cause: no failure in it (class `none`), or only a bare SIGKILL.
    `status`: the job's own exit status when oomfix ran it (`run`) or was told it (`verdict --exit-code`), else None;
    `done`: the run's attempts before this one. None: the class decides.

    `trained` needs evidence of a finish: the log's clean-finish marker, or exit status 0. A log with neither (empty,
    or cut before the end) is not a finished job."""
    if d.cls == "none" and (d.finished or status == 0):
        return TRAINED, "training finished" if d.finished else "the job exited 0 and its log shows no failure"
    if _bare_sigkill(d, status):
        # who sends a bare SIGKILL: the kernel's or a cgroup's OOM killer (Kubernetes OOMKilled), a scheduler at the
        # end of its grace period, a person. Not a cause a relaunch cannot fix, and not proof of a memory failure
        # (no memory edit on it): one relaunch of the same config; killed that way twice in a row, a person decides
        if done and _was_bare_sigkill(done[-1]):
            return PERMANENT, ("killed with SIGKILL again, and the log does not say by whom (no OOM-killer line): "
                               "check `dmesg -T | grep -i 'killed process'`, the scheduler's record and the job's "
                               "memory limit (a cgroup limit: Kubernetes OOMKilled) before relaunching")
        return OUTSIDE, ("killed with SIGKILL, and the log does not say by whom (the OOM killer, a scheduler's time "
                         "limit, a person): relaunch the same config once, resuming; a second SIGKILL in a row stops "
                         "the run (verdict permanent)")
    if d.cls != "none":
        return None
    if status is None:
        what = "the log is empty" if d.reason == "the log is empty" else \
            "the log ends without a finish or a failure"
        return OUTSIDE, (f"{what}: the job was stopped before it finished, or the log was cut; relaunch the same "
                         "config, resuming (a cut log: diagnose the whole of it)")
    if status > 128 and status - 128 in STOP_SIGNALS:
        name = signal.Signals(status - 128).name
        return OUTSIDE, f"the job was killed by {name} (exit {status}) and its log shows no failure: stopped from " \
                        "outside; relaunch the same config, resuming"
    return PERMANENT, f"the job exited {status} and its log shows no failure: read its output; fix the cause"


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


def log_key(log: str, config: str | None) -> str:
    """What names the run of `oomfix verdict LOG` outside a scheduler: the log and the config (the scheduler's step
    that writes the same log each attempt continues one run; another job's log is another run)."""
    return "\0".join(("verdict", os.path.realpath(log), os.path.realpath(config) if config else ""))


def render_text(v: LogVerdict) -> str:
    """`oomfix verdict`'s text: the verdict, the class, and why."""
    return (f"verdict: {v.verdict.name} (exit {v.verdict.exit_code}, retry: {'yes' if v.verdict.retry else 'no'})\n"
            f"class: {v.diagnosis.cls}\n{v.reason}\n")


def verdict_of_log(log: str, opts: RunOptions, write: bool = False, root: str = ".",
                   term: Terminal | None = None, exit_code: int | None = None) -> LogVerdict:
    """Diagnose LOG and say what it means to a scheduler. Dry run by default (the verdict the fix would give); with
    `write` the fix is applied exactly as `run --once` applies it, and the verdict is recorded in the ledger under
    the run id (so that the next attempt sets what it must, e.g. a free port or the Flight Recorder); the same log
    written twice is recorded and fixed once. `exit_code`: the job's own exit status, when the caller knows it."""
    from oomfix import flightrec
    from oomfix.apply import plan_apply
    from oomfix.child import Terminal
    from oomfix.diagnose import diagnose_logs
    from oomfix.remedy import FR_RULE
    from oomfix.supervise import Supervisor, default_run_id

    d = diagnose_logs([log], config=opts.config, rules_dir=opts.rules_dir)
    unexplained = unexplained_end(d, exit_code)
    if unexplained is not None and unexplained[0] is TRAINED:
        return LogVerdict(TRAINED, d, unexplained[1])
    if opts.run_id is None:
        opts = replace(opts, run_id=default_run_id(log_key(log, opts.config)))
    if write:
        sup = Supervisor(replace(opts, once=True), root, term or Terminal(2, 2, prog="oomfix verdict"))
        rem, rec = sup.record_verdict(log, d, exit_code)
        return LogVerdict(rem.verdict, d, rem.why or f"applied {rem.rule}", rem.rule, rec.files, True,
                          dict(rec.next_env))
    if unexplained is not None:
        return LogVerdict(unexplained[0], d, unexplained[1])
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
