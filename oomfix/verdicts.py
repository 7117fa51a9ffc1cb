"""Verdicts: what one attempt's end means to a scheduler, as an exit code it can map to "retry" or "stop".

`oomfix run --once` and `oomfix verdict LOG` exit with one of these codes. The codes are chosen so that the
schedulers' own defaults already do the right thing:
- Kubeflow (`restartPolicy: ExitCode`) treats 1-127 as permanent and 128-255 as retryable (130, 137, 143 signals,
  138 "user-defined retryable"): `fixed` is 138 and `outside` is 143; `permanent` and `no-rung` are below 128.
- Kubernetes `podFailurePolicy`, SkyPilot `recover_on_exit_codes`, SLURM `scontrol requeue`: the snippets under
  docs/schedulers/ map exactly this table (tests/test_verdicts.py parses them and checks each mapping).
"""
from __future__ import annotations

from dataclasses import dataclass

from oomfix.model import MEMORY_CLASSES


@dataclass(frozen=True)
class Verdict:
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
