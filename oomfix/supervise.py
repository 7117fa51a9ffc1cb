"""The `run` use case: start a training command so that a closed terminal cannot kill it, and when it dies,
diagnose its log, apply the next fix exactly as `apply --write` does, and relaunch it, until it trains.

This module is the loop; each stage of one run has a module of its own:
1. what CMD starts, read before it starts: its jobs, its config, its own log, the refusal of a CMD that starts
   several jobs (oomfix/command.py);
2. one attempt: CMD in its own session, its log copied to the terminal, stopped on a signal (oomfix/child.py);
3. its log diagnosed; the remedy, the state carried to the next attempt, and what the relaunch runs
   (oomfix/remedy.py; resuming from a whole checkpoint: oomfix/checkpoints.py; the Flight Recorder:
   oomfix/flightrec.py);
4. the verdict a scheduler gets (oomfix/verdicts.py), the ledger record (oomfix/ledger.py, `.oomfix/runs.jsonl`),
   the notifications (oomfix/notify.py).
`--detach` (the supervisor itself in the background) is at the end.
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from oomfix import ledger, verdicts
from oomfix.checkpoints import newest_checkpoint, resume_argv
from oomfix.child import Child, Launch, Terminal, descendants, exit_status, subreaper
from oomfix.command import (PORT_ENV, command_jobs, config_of_command, free_port, job_log_of_attempt, job_log_pattern,
                            jobs_problem, with_port)
from oomfix.errors import OomfixError, UsageError
from oomfix.ledger import Attempt, Started
from oomfix.model import Diagnosis
from oomfix.remedy import FR_RULE, PORT_RULE, Remedies, Remedy, changed_keys, not_picked_up
from oomfix.verdicts import LogVerdict, Verdict, verdict_of_log

# the names callers and tests imported from here before each stage had a module of its own (re-exported)
__all__ = ["Detached", "FR_RULE", "Launch", "LogVerdict", "PORT_ENV", "PORT_RULE", "Remedies", "Remedy",
           "RunOptions", "RunResult", "Supervisor", "Terminal", "attempt_log", "base_log", "changed_keys",
           "child_argv", "command_jobs", "config_of_command", "default_run_id", "descendants", "detach", "exit_status",
           "free_port", "job_log_of_attempt", "jobs_problem", "newest_checkpoint", "not_picked_up", "resume_argv",
           "supervise", "supervisor_log", "validate", "verdict_of_log", "with_port"]

GRACE_SECONDS = 30.0  # what torchrun gives its workers between SIGTERM and SIGKILL
# the run ids a scheduler keeps across requeues and recoveries: attempt N+1 finds attempts 1..N under the same id
RUN_ID_ENV = ("OOMFIX_RUN_ID", "SLURM_JOB_ID", "SKYPILOT_TASK_ID")


@dataclass(frozen=True)
class RunOptions:
    """What `oomfix run` was asked to do (its command-line options)."""

    cmd: tuple[str, ...]
    config: str | None = None
    all_configs: bool = False
    retries: int = 3
    log: str | None = None  # the base name: attempt N logs to <stem>-attemptN<suffix>
    allow_semantic: bool = False
    resume: bool = False
    grace: float = GRACE_SECONDS
    rules_dir: str | None = None
    once: bool = False  # one attempt, then exit with its verdict (oomfix/verdicts.py) for a scheduler to map
    run_id: str | None = None  # the run the attempts belong to across processes (default: the scheduler's job id)
    notify: str | None = None  # a command run with the verdict in its environment
    notify_url: str | None = None  # a webhook that gets the verdict as JSON
    job_log: str | None = None  # the job's own log, when CMD's script redirects the job's output to a file


@dataclass(frozen=True)
class RunResult:
    """How a run ended: the exit status `oomfix run` exits with, every attempt, why it ended, and its verdict."""

    exit_code: int
    attempts: tuple[Attempt, ...]
    reason: str  # why the loop ended, one line
    verdict: Verdict | None = None


# --- names: logs and runs -----------------------------------------------------------------------------------------

def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def base_log(log: str | None, stamp: str | None = None) -> str:
    """The base name of a run's logs: --log, else logs/run-<local time>.log."""
    if log:
        return log
    stamp = stamp or datetime.now().strftime("%Y%m%d-%H%M%S")
    return os.path.join("logs", f"run-{stamp}.log")


def _beside(base: str, tag: str) -> str:
    """logs/run.log -> logs/run-TAG.log (a base without a suffix gets .log)."""
    p = Path(base)
    return str(p.with_name(f"{p.stem if p.suffix else p.name}-{tag}{p.suffix or '.log'}"))


def attempt_log(base: str, n: int) -> str:
    """logs/run.log -> logs/run-attempt1.log: one file per attempt, the earlier ones kept."""
    return _beside(base, f"attempt{n}")


def supervisor_log(base: str) -> str:
    """logs/run.log -> logs/run-supervisor.log: what a --detach'ed supervisor says."""
    return _beside(base, "supervisor")


def default_run_id(key: str | None = None) -> str:
    """The scheduler's job id, which survives its requeues (the next attempt continues this run); outside a scheduler
    `cmd-<hash>` of `key` (the command and its config: the same job run again continues its run, an unrelated
    command is a run of its own), else 'default'."""
    found = next((os.environ[k] for k in RUN_ID_ENV if os.environ.get(k)), None)
    if found is not None:
        return found
    if key is None:
        return "default"
    import hashlib

    return "cmd-" + hashlib.sha256(key.encode("utf-8", errors="surrogateescape")).hexdigest()[:12]


def command_key(cmd: tuple[str, ...] | list[str], config: str | None) -> str:
    """What names a `run --once` outside a scheduler: the command and the config it trains with (a fix edits the
    config's contents, not its path, so the relaunch keeps the key)."""
    return "\0".join(("run", *cmd, "\0", os.path.realpath(config) if config else ""))


def validate(opts: RunOptions) -> RunOptions:
    """Usage errors, before anything starts; returns the options with the config filled in from CMD."""
    if not opts.cmd:
        raise UsageError("no command given: oomfix run [OPTIONS] -- CMD [ARG...]")
    if opts.retries < 0:
        raise UsageError("--retries must be 0 or more")
    if opts.grace < 0:
        raise UsageError("--grace must be 0 or more")
    prog = opts.cmd[0]
    if shutil.which(prog) is None:
        raise UsageError(f"{prog}: command not found")
    if opts.config is not None and not os.path.isfile(opts.config):
        raise UsageError(f"{opts.config}: config not found")
    if opts.notify_url:
        from oomfix.notify import check_url

        bad = check_url(opts.notify_url)
        if bad:
            raise UsageError(bad)
    script, jobs = command_jobs(opts.cmd)
    problem = jobs_problem(script, jobs)
    if problem:
        raise UsageError(problem)
    if opts.job_log is None and len(jobs) == 1:
        opts = replace(opts, job_log=job_log_pattern(jobs[0], "."))
    if opts.config is None:
        opts = replace(opts, config=config_of_command(opts.cmd))
    if opts.once and opts.run_id is None:
        # the scheduler's job id survives its requeues: the next attempt continues this run
        opts = replace(opts, run_id=default_run_id(command_key(opts.cmd, opts.config)))
    if opts.run_id is not None and not re.fullmatch(r"[\w.:@+-]{1,200}", opts.run_id):
        raise UsageError(f"--run-id {opts.run_id!r}: letters, digits and . _ - : @ + only")
    return opts


# --- the supervisor -----------------------------------------------------------------------------------------------

class Supervisor:
    """One run: attempts of CMD until it trains, with the remedy between them; `run` is the whole of it."""

    def __init__(self, opts: RunOptions, root: str = ".", term: Terminal | None = None) -> None:
        self.opts = opts
        self.root = root
        self.term = term or Terminal()
        self.stop_sig: int | None = None
        self.hurry = False
        self.base = base_log(opts.log)
        self.attempts: list[Attempt] = []
        self.remedies = Remedies(opts, root, self.term)
        self.foreign: set[tuple[int, int]] = set()  # processes of ours that are not the job's (an embedding program's)
        # names this run's records in the ledger (another supervisor may append to it at the same time); a run id
        # given (or the scheduler's job id under --once) spans processes: a requeued attempt continues the run
        self.run_id = opts.run_id or f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{os.getpid()}"
        self.history: list[Attempt] = []  # this run's attempts that earlier processes recorded
        self.before = 0  # attempts of this run id up to its last `trained` one: an earlier run of the same id

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self.stop_sig is None:
            self.stop_sig = signum
        else:
            self.hurry = True  # a second Ctrl-C: no more grace

    @staticmethod
    def _sig_name(sig: int) -> str:
        return signal.Signals(sig).name

    # between attempts -------------------------------------------------------------------------------------------
    def _diagnose(self, log: str) -> Diagnosis | None:
        from oomfix.diagnose import diagnose_logs

        try:
            return diagnose_logs([log], rules_dir=self.opts.rules_dir)
        except OomfixError as e:
            self.term.say(f"oomfix run: cannot diagnose {log}: {e}")
            return None

    def _print_stop(self, d: Diagnosis | None, why: str) -> None:
        from oomfix.report import Style, render_diagnosis_text

        if d is not None:
            self.term.say("")
            self.term.say(render_diagnosis_text(d, Style(sys.stderr)).rstrip("\n"))
        self.term.say("")
        self.term.say(f"oomfix run: stopping: {why}")

    # the loop ---------------------------------------------------------------------------------------------------
    def run(self) -> RunResult:
        """The whole run, with the supervisor's signal handlers in place (and the ones before put back after)."""
        handled = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)  # USR1: SLURM's --signal=B:USR1@T warning
        previous = {s: signal.signal(s, self._on_signal) for s in handled}
        # a closing terminal sends SIGHUP; a supervisor left in the background of one may get SIGTTOU for writing
        ignored = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGHUP, signal.SIGTTOU)}
        self.foreign = descendants(os.getpid())
        subreaper(True)
        try:
            if not self.opts.once:
                return self._finish(self._loop())
            with ledger.run_lock(self.run_id, self.root, on_wait=lambda: self.term.say(
                    f"oomfix run: another attempt of run {self.run_id} is in progress; waiting for it to end")):
                return self._finish(self._loop())
        finally:
            subreaper(False)
            for s, h in ignored.items():
                signal.signal(s, h)
            for s, h in previous.items():
                signal.signal(s, h)

    def _finish(self, res: RunResult) -> RunResult:
        if self.opts.once and res.verdict is not None:
            self.term.say(f"oomfix run: verdict: {res.verdict.name} (exit {res.verdict.exit_code}): "
                          f"{res.verdict.meaning}")
            return replace(res, exit_code=res.verdict.exit_code)
        return res

    def _append(self, rec: Attempt | Started) -> None:
        """A ledger that cannot be written is said, never the end of the run."""
        try:
            ledger.append(rec, self.root)
        except OSError as e:
            self.term.say(f"oomfix run: cannot write the ledger: {e.strerror}")
        except OomfixError as e:
            self.term.say(f"oomfix run: cannot write the ledger: {e}")

    def _record(self, rec: Attempt) -> Attempt:
        rec = replace(rec, run=self.run_id, host=ledger.hostname(), next_env=dict(self.remedies.extra_env))
        self.attempts.append(rec)
        self._append(rec)
        return rec

    def _notify(self, event: str, rec: Attempt, why: str | None) -> None:
        if not (self.opts.notify or self.opts.notify_url):
            return
        from oomfix import notify

        for problem in notify.send(event, notify.payload(event, rec, why), self.opts.notify, self.opts.notify_url):
            self.term.say(f"oomfix run: notification: {problem}")

    def _started(self, n: int, launch: Launch, log: str) -> None:
        self._append(Started(n, launch.shown(), _now(), log, self.run_id, ledger.hostname(), os.getpid()))

    def _load_history(self) -> int:
        """The attempts of this run that earlier processes recorded (a requeue, another node): their number, and the
        environment the last one asked the next attempt to set."""
        try:
            events = ledger.of_run(ledger.read_events(self.root), self.run_id)
        except OomfixError as e:
            self.term.say(f"oomfix run: cannot read the ledger: {e}")
            return 0
        last_n = max((e.attempt for e in events), default=0)
        trained = [i for i, e in enumerate(events) if isinstance(e, Attempt) and e.verdict == verdicts.TRAINED.name]
        if trained:
            # a run that trained is over: this attempt starts a new run under the same id (the same command again);
            # the numbering goes on, the earlier attempts count against nothing
            self.before = max(e.attempt for e in events[:trained[-1] + 1])
            events = events[trained[-1] + 1:]
            if not events:
                self.term.say(f"oomfix run: run {self.run_id}: attempt {self.before} trained; a new run starts "
                              f"under the same id at attempt {self.before + 1}")
        self.history = [e for e in events if isinstance(e, Attempt)]
        if self.history:
            last = self.history[-1]
            self.remedies.restore(last)
            self.term.say(f"oomfix run: run {self.run_id}: attempts {self.before + 1}..{max(e.attempt for e in events)}"
                          f" are in the ledger; the last ended {last.verdict or last.cls or 'unrecorded'}"
                          + (f", rule {last.rule}" if last.rule else ""))
        for s in ledger.unfinished(events):
            self.term.say(f"oomfix run: attempt {s.attempt} (started {s.started} on {s.host}, pid {s.pid}) has no end "
                          f"record: its supervisor was killed; counted as an attempt")
        return last_n

    def record_verdict(self, log: str, d: Diagnosis, status: int | None = None) -> tuple[Remedy, Attempt]:
        """`oomfix verdict --write`: the remedy for a log another process produced (the scheduler's own step),
        applied exactly as `run --once` applies it, and recorded in the ledger as the run's next attempt. The same
        log again (same bytes) is the attempt already recorded: its verdict, nothing applied or recorded twice."""
        from oomfix.journal import file_sha256

        digest = file_sha256(log)
        with ledger.run_lock(self.run_id, self.root, on_wait=lambda: self.term.say(
                f"oomfix run: another attempt of run {self.run_id} is in progress; waiting for it to end")):
            n = self._load_history()
            seen = next((a for a in reversed(self.history) if digest and a.log_sha256 == digest), None)
            if seen is not None and seen.verdict in verdicts.BY_NAME:
                why = (f"{log} was recorded as attempt {seen.attempt} of run {self.run_id} already "
                       f"({seen.verdict}{', rule ' + seen.rule if seen.rule else ''}): nothing applied twice")
                self.term.say(f"oomfix run: {why}")
                return Remedy(seen.rule, seen.files, why, verdicts.BY_NAME[seen.verdict]), seen
            self.remedies.current_env = dict(self.remedies.extra_env)
            rem = self.remedies.after(log, d, self.opts.retries - (n - self.before),
                                      [*self.history, *self.attempts], status)
            self.remedies.flight_recorder_for(log)  # the scheduler's next attempt logs where this one did
            rec = Attempt(n + 1, "(oomfix verdict)", _now(), _now(), 1 if status is None else status, log, d.cls,
                          rem.rule, tuple(os.path.relpath(f) for f in rem.files), verdict=rem.verdict.name,
                          log_sha256=digest)
            return rem, self._record(rec)

    def _job_failed(self, status: int, job_log: str | None) -> tuple[int, Diagnosis | None]:
        """A script that backgrounds its job and `wait`s exits 0 whatever the job did: the job's own log decides."""
        if job_log is None or status != 0:
            return status, None
        d = self._diagnose(job_log)
        if d is not None and d.cls != "none":
            self.term.say(f"oomfix run: CMD exited 0, but the job's own log {job_log} shows {d.cls}")
            return 1, d
        return status, d

    def _loop(self) -> RunResult:
        n = self._load_history() if self.opts.once or self.opts.run_id else 0
        if self.opts.config:
            from oomfix.journal import file_sha256

            self.remedies.seen_states.add((os.path.realpath(self.opts.config), file_sha256(self.opts.config) or ""))
            self.term.say(f"oomfix run: config: {self.opts.config}")
        else:
            self.term.say("oomfix run: CMD names no config oomfix can read: a fix will go to the config the log names, "
                          "or the loop stops and asks for --config")
        first = n + 1
        while True:
            n += 1
            if self.stop_sig is not None:  # a signal between two attempts: no relaunch
                return self._stopped_between()
            log = attempt_log(self.base, n)
            launch = self.remedies.launch(log, relaunch=bool(self.attempts or self.history))
            self.remedies.current_env = dict(launch.env)
            self.term.say(f"oomfix run: attempt {n}: {launch.shown()}")
            self.term.say(f"oomfix run: log: {log}")
            started = _now()
            t_start = time.time()
            self._started(n, launch, log)
            status, stopped = Child(self.term, self.opts.grace, self.foreign, lambda: self.stop_sig,
                                    lambda: self.hurry).run(launch, log)
            ended = _now()
            if stopped:
                assert self.stop_sig is not None
                d = self._diagnose(log)
                name = self._sig_name(self.stop_sig)
                rec = Attempt(n, launch.shown(), started, ended, status, log, d.cls if d else None, stopped_by=name,
                              verdict=verdicts.OUTSIDE.name)
                rec = self._record(rec)
                self.term.say(f"oomfix run: stopped by {name}; attempt {n} recorded as stopped, no relaunch")
                self._notify("failure", rec, f"stopped by {name}")
                return self._stopped(verdicts.OUTSIDE)
            job_log = job_log_of_attempt(self.opts.job_log, t_start) if self.opts.job_log else None
            status, jd = self._job_failed(status, job_log)
            diag_log = job_log or log
            if status == 0:
                rec = Attempt(n, launch.shown(), started, ended, 0, log, "none", verdict=verdicts.TRAINED.name)
                rec = self._record(rec)
                self.term.say(f"oomfix run: attempt {n} trained (exit 0)")
                self._notify("finish", rec, None)
                return RunResult(0, tuple(self.attempts), "trained", verdicts.TRAINED)
            self.term.say(f"oomfix run: attempt {n} failed (exit {status}); diagnosing {diag_log}")
            d = jd or self._diagnose(diag_log)
            rem = Remedy(None, (), "the log could not be diagnosed", verdicts.PERMANENT)
            if d is not None:
                try:
                    relaunches_left = self.opts.retries - (n - 1 - self.before) if self.opts.once else \
                        self.opts.retries - (n - first)
                    rem = self.remedies.after(diag_log, d, relaunches_left, [*self.history, *self.attempts], status)
                except KeyboardInterrupt:  # Ctrl-C while the journal held it: the transaction was rolled back
                    self.stop_sig = self.stop_sig or signal.SIGINT
                    rem = Remedy(None, (), "interrupted", verdicts.OUTSIDE)
                except OomfixError as e:
                    rem = Remedy(None, (), str(e), verdicts.PERMANENT)
            stop_name = self._sig_name(self.stop_sig) if self.stop_sig is not None else None
            verdict = verdicts.OUTSIDE if stop_name else rem.verdict
            if not rem.files:
                self.remedies.last_change = {}
            rec = Attempt(n, launch.shown(), started, ended, status, log, d.cls if d else None, rem.rule,
                          tuple(os.path.relpath(f) for f in rem.files), stop_name, verdict=verdict.name,
                          changed=dict(self.remedies.last_change))
            self.remedies.flight_recorder_for(attempt_log(self.base, n + 1))  # recorded for a requeue too
            rec = self._record(rec)
            if rem.why is not None or self.opts.once:
                self._notify("fix" if verdict is verdicts.FIXED else "failure", rec, rem.why)
                if self.stop_sig is None:
                    if rem.why is not None:
                        self._print_stop(d, rem.why)
                    return RunResult(status, tuple(self.attempts), rem.why or f"applied {rem.rule}", verdict)
                return RunResult(128 + self.stop_sig, tuple(self.attempts), f"stopped by {stop_name}", verdict)
            self._notify("fix", rec, None)

    def _stopped_between(self) -> RunResult:
        assert self.stop_sig is not None
        name = self._sig_name(self.stop_sig)
        self.term.say(f"oomfix run: {name}: not relaunching")
        return self._stopped(verdicts.OUTSIDE)

    def _stopped(self, verdict: Verdict) -> RunResult:
        """The run was stopped by a signal: the shell's exit status for a death by it."""
        assert self.stop_sig is not None
        return RunResult(128 + self.stop_sig, tuple(self.attempts), f"stopped by {self._sig_name(self.stop_sig)}",
                         verdict)


def supervise(opts: RunOptions, root: str = ".") -> RunResult:
    """Run CMD until it trains, a failure without an automatic remedy, no relaunch left, or a signal."""
    return Supervisor(validate(opts), root).run()


# --- --detach -----------------------------------------------------------------------------------------------------

def child_argv(opts: RunOptions, log: str) -> list[str]:
    """The `oomfix run` command line the background supervisor runs: these options, without --detach."""
    argv = [sys.executable, "-m", "oomfix", "run", "--log", log, "--retries", str(opts.retries),
            "--grace", f"{opts.grace:g}"]
    if opts.config:
        argv += ["--config", opts.config]
    for flag, on in (("--all-configs", opts.all_configs), ("--allow-semantic-changes", opts.allow_semantic),
                     ("--resume", opts.resume), ("--once", opts.once)):
        if on:
            argv.append(flag)
    for flag, value in (("--run-id", opts.run_id), ("--notify", opts.notify), ("--notify-url", opts.notify_url)):
        if value is not None:
            argv += [flag, value]
    return [*argv, "--", *opts.cmd]


@dataclass(frozen=True)
class Detached:
    """A supervisor started in the background: its pid and where it logs."""

    pid: int
    base_log: str
    supervisor_log: str

    def describe(self) -> Iterator[str]:
        """What `oomfix run --detach` prints: the pid, the logs to follow, how to stop it."""
        yield f"oomfix run: supervising in the background, pid {self.pid}"
        yield f"  supervisor log: {self.supervisor_log}"
        yield f"  attempt logs:   {attempt_log(self.base_log, 1)}, {attempt_log(self.base_log, 2)}, ..."
        yield f"  follow it:      tail -F {shlex.quote(self.supervisor_log)}"
        yield "  the attempts:   oomfix runs"
        yield f"  stop it:        kill {self.pid}   (SIGTERM: the job gets SIGTERM, then SIGKILL after the grace period)"


def detach(opts: RunOptions) -> Detached:
    """Start the supervisor itself in its own session, in the background, writing to its own log."""
    opts = validate(opts)
    base = base_log(opts.log)
    sup = supervisor_log(base)
    Path(sup).parent.mkdir(parents=True, exist_ok=True)
    with open(sup, "ab") as out:
        proc = subprocess.Popen(child_argv(opts, base), stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    return Detached(proc.pid, base, sup)

