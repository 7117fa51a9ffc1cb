"""The `run` use case: start a training command so that a closed terminal cannot kill it, and when it dies,
diagnose its log, apply the next fix exactly as `apply --write` does, and relaunch it, until it trains.

One attempt: CMD runs in its own session (setsid), stdin from /dev/null, stdout and stderr to the attempt's own log
file; the supervisor copies that log to its terminal while it can (a terminal that went away stops the copy, never
the supervisor). After a failure: a memory class with a rung left gets the rung (journalled, undoable) and a
relaunch; `port_in_use` gets a relaunch on a free port; everything else stops with the diagnosis printed.
Each attempt is one line of `.oomfix/runs.jsonl` (oomfix/ledger.py).
"""
from __future__ import annotations

import errno
import os
import re
import select
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from oomfix import ledger, verdicts
from oomfix.errors import InputError, OomfixError, UsageError
from oomfix.ledger import Attempt, Started
from oomfix.model import MEMORY_CLASSES, Diagnosis
from oomfix.verdicts import Verdict

GRACE_SECONDS = 30.0  # what torchrun gives its workers between SIGTERM and SIGKILL
POLL_SECONDS = 0.1
PORT_RULE = "port-in-use-free-master-port"
# torchrun reads every option from PET_<NAME> when it is not on the command line (torch/distributed/argparse_util.py);
# MASTER_PORT is what llamafactory-cli, `deepspeed` and a bare init_process_group(env://) read
PORT_ENV = ("MASTER_PORT", "PET_MASTER_PORT")
_PORT_OPTS = ("--master_port", "--master-port", "--main_process_port", "--main-process-port")
_ENDPOINT_OPTS = ("--rdzv_endpoint", "--rdzv-endpoint")
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")  # transformers.trainer_utils.PREFIX_CHECKPOINT_DIR + "-N"
FR_RULE = "nccl-timeout-flight-recorder"
# the run ids a scheduler keeps across requeues and recoveries: attempt N+1 finds attempts 1..N under the same id
RUN_ID_ENV = ("OOMFIX_RUN_ID", "SLURM_JOB_ID", "SKYPILOT_TASK_ID")


@dataclass(frozen=True)
class RunOptions:
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
    exit_code: int
    attempts: tuple[Attempt, ...]
    reason: str  # why the loop ended, one line
    verdict: Verdict | None = None


@dataclass(frozen=True)
class Remedy:
    """What happens after a failed attempt: the fix applied (if any), why the loop does not relaunch by itself
    (None: it does), and the verdict a scheduler gets."""

    rule: str | None
    files: tuple[str, ...]
    why: str | None
    verdict: Verdict


@dataclass(frozen=True)
class Launch:
    """What one attempt runs: the argv, and the environment variables it sets on top of the supervisor's."""

    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)

    def shown(self) -> str:
        return " ".join([f"{k}={shlex.quote(v)}" for k, v in self.env.items()] + [shlex.join(self.argv)])


# --- names, ports, checkpoints: small pure helpers ---------------------------------------------------------------

def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def base_log(log: str | None, stamp: str | None = None) -> str:
    if log:
        return log
    stamp = stamp or datetime.now().strftime("%Y%m%d-%H%M%S")
    return os.path.join("logs", f"run-{stamp}.log")


def attempt_log(base: str, n: int) -> str:
    """logs/run.log -> logs/run-attempt1.log: one file per attempt, the earlier ones kept."""
    p = Path(base)
    suffix = p.suffix or ".log"
    return str(p.with_name(f"{p.stem if p.suffix else p.name}-attempt{n}{suffix}"))


def supervisor_log(base: str) -> str:
    p = Path(base)
    return str(p.with_name(f"{p.stem if p.suffix else p.name}-supervisor{p.suffix or '.log'}"))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("", 0))
        return int(s.getsockname()[1])


def with_port(argv: Sequence[str], port: int) -> tuple[str, ...]:
    """The command with an explicit master port replaced (an option on the command line beats the environment)."""
    out = list(argv)
    i = 0
    while i < len(out):
        a = out[i]
        name, eq, value = a.partition("=")
        if name in _PORT_OPTS:
            if eq:
                out[i] = f"{name}={port}"
            elif i + 1 < len(out):
                out[i + 1] = str(port)
                i += 1
        elif name in _ENDPOINT_OPTS:
            j = i if eq else i + 1
            if j < len(out):
                v = value if eq else out[j]
                host = v.rsplit(":", 1)[0] if ":" in v else v
                new = f"{host}:{port}"
                out[j] = f"{name}={new}" if eq else new
                i = j
        i += 1
    return tuple(out)


def newest_checkpoint(output_dir: str) -> str | None:
    """What transformers.trainer_utils.get_last_checkpoint returns: the checkpoint-N directory with the largest N."""
    try:
        entries = os.listdir(output_dir)
    except OSError:
        return None
    found = [(int(m.group(1)), e) for e in entries if (m := _CHECKPOINT.match(e))
             and os.path.isdir(os.path.join(output_dir, e))]
    return os.path.join(output_dir, max(found)[1]) if found else None


def _is_override(tok: str) -> bool:
    return bool(re.fullmatch(r"[A-Za-z_][\w.]*=.*", tok, re.S))


def _complete(output_dir: str, say: Callable[[str], None] | None) -> str | None:
    """The newest complete checkpoint-N (oomfix/checkpoints.py); the half-written newer ones are said, and skipped."""
    from oomfix.checkpoints import newest_complete

    path, skipped = newest_complete(output_dir)
    for s in skipped:
        if say is not None:
            say(f"oomfix run: skipping {s.path}: {s.why}")
    return path


def resume_argv(argv: Sequence[str], config: str | None,
                say: Callable[[str], None] | None = None) -> tuple[tuple[str, ...] | None, str]:
    """The command resuming from the newest complete checkpoint of its output directory, for one attempt (the config
    is not edited), or None and why not.

    - LLaMA-Factory (`llamafactory-cli train X.yaml`, or its launcher under torchrun): `read_args` merges
      `key=value` words after the YAML into it (OmegaConf.from_cli), so `resume_from_checkpoint=PATH` is appended.
    - HF Trainer scripts parsed with HfArgumentParser flags (`--output_dir DIR ...`): `--resume_from_checkpoint
      PATH`, which the script must pass to `trainer.train()` (the transformers examples do).
    """
    toks = list(argv)
    flag_dir = None
    for i, t in enumerate(toks):
        name, eq, value = t.partition("=")
        if name in ("--output_dir", "--output-dir"):
            flag_dir = value if eq else (toks[i + 1] if i + 1 < len(toks) else None)
    if flag_dir is not None:
        if any(t.partition("=")[0] == "--resume_from_checkpoint" for t in toks):
            return None, "the command already names --resume_from_checkpoint"
        ckpt = _complete(flag_dir, say)
        if ckpt is None:
            return None, f"no complete checkpoint-N in {flag_dir}"
        return (*toks, "--resume_from_checkpoint", ckpt), f"resuming from {ckpt}"
    if not config:
        return None, "the command names no config (LLaMA-Factory YAML) and no --output_dir"
    idx = next((i for i, t in enumerate(toks) if t.endswith((".yaml", ".yml", ".json"))
                and os.path.exists(t) and os.path.samefile(t, config)), None)
    if idx is None or not all(_is_override(t) for t in toks[idx + 1:]):
        return None, f"{config} is not the last argument of the command (only `X.yaml key=value ...` takes overrides)"
    if any(t.startswith("resume_from_checkpoint=") for t in toks[idx + 1:]):
        return None, "the command already sets resume_from_checkpoint"
    out_dir = next((t.split("=", 1)[1] for t in toks[idx + 1:] if t.startswith("output_dir=")), None)
    if out_dir is None:
        from oomfix.configs import load_config

        out_dir = load_config(config).data.get("output_dir")
    if not isinstance(out_dir, str):
        return None, f"{config} has no output_dir"
    ckpt = _complete(out_dir, say)
    if ckpt is None:
        return None, f"no complete checkpoint-N in {out_dir}"
    return (*toks, f"resume_from_checkpoint={ckpt}"), f"resuming from {ckpt}"


def command_jobs(argv: Sequence[str], cwd: str = ".") -> tuple[str | None, list[Any]]:
    """The training jobs CMD starts, read the way `oomfix jobs` reads a launcher line (or the script CMD runs), and
    the script's path when CMD runs one."""
    from oomfix.launcher import parse_launcher

    here = os.path.abspath(cwd)
    try:
        if len(argv) >= 2 and os.path.basename(argv[0]) in ("bash", "sh") and os.path.isfile(argv[1]):
            return argv[1], list(parse_launcher(argv[1]).jobs)  # the script's own jobs, each with its line
        lau = parse_launcher(os.path.join(here, "oomfix-run-command.sh"), shlex.join(argv))
    except OomfixError:
        return None, []  # an unreadable script: the config comes from --config or the log
    return None, list(lau.jobs)


def config_of_command(argv: Sequence[str], cwd: str = ".") -> str | None:
    """The training config CMD starts, read the way `oomfix jobs` reads a launcher line (or the script CMD runs)."""
    from oomfix.launcher import job_path

    here = os.path.abspath(cwd)
    _, jobs = command_jobs(argv, cwd)
    paths = {p for j in jobs if j.config and (p := job_path(j, j.config))}
    if len(paths) != 1:
        return None
    return os.path.relpath(paths.pop(), here)


_EXPANSION = re.compile(r"\$\([^()]*\)|\$\{[^{}]*\}|\$\w+|`[^`]*`")


def _job_log(job: Any, cwd: str) -> str | None:
    """The job's own log file when the script redirects its output to one: a path, or a glob pattern where the path
    has parts known only when it runs (`logs/train_$(date +%s).log` -> `logs/train_*.log`)."""
    if not job.log:
        return None
    log = _EXPANSION.sub("*", job.log)
    if "$" in log or "`" in log or log.strip("*/") == "":
        return None
    base = job.cwd or cwd
    return os.path.relpath(os.path.normpath(os.path.join(base, log)), cwd)


def job_log_of_attempt(pattern: str, since: float) -> str | None:
    """The job's log this attempt wrote: the path, or the newest file matching the pattern modified since the
    attempt started."""
    import glob

    if not glob.has_magic(pattern):
        return pattern if os.path.exists(pattern) else None
    found = []
    for p in glob.glob(pattern):
        try:
            m = os.stat(p).st_mtime
        except OSError:
            continue
        if m >= since - 1:
            found.append((m, p))
    return max(found)[1] if found else None


def jobs_problem(script: str | None, jobs: Sequence[Any]) -> str | None:
    """Why one supervisor cannot supervise CMD: a script that starts several jobs, in the background or each with
    its own log (its exit status, after `wait`, says nothing about them; relaunching it restarts all of them)."""
    def exclusive(a: Any, b: Any) -> bool:  # two branches of one if/case: only one of them runs
        return any(fa == fb and ka != kb for fa, ka in a.branches for fb, kb in b.branches)

    several = any(not exclusive(a, b) for i, a in enumerate(jobs) for b in jobs[i + 1:]) \
        or any(j.loop_runs > 1 for j in jobs)  # `for cfg in a b; do torchrun ... & done`
    if not several or not any(j.background or j.log for j in jobs):
        return None
    listed = "; ".join(f"line {j.line}: {' '.join(j.tokens[:6])}{' ...' if len(j.tokens) > 6 else ''}"
                       + (f" > {j.log}" if j.log else "") + (" &" if j.background else "") for j in jobs)
    count = sum(j.loop_runs for j in jobs)
    return (f"{script or 'CMD'} starts {count} training jobs ({listed}); one supervisor cannot tell which of "
            f"them failed, and a relaunch would restart all of them. Supervise each job on its own: "
            f"`oomfix run --config CONFIG -- JOB-COMMAND`, once per job (in the script: `setsid oomfix run ... &`)")


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
        opts = replace(opts, job_log=_job_log(jobs[0], "."))
    if opts.config is None:
        opts = replace(opts, config=config_of_command(opts.cmd))
    if opts.once and opts.run_id is None:
        # the scheduler's job id survives its requeues: the next attempt continues this run
        opts = replace(opts, run_id=next((os.environ[k] for k in RUN_ID_ENV if os.environ.get(k)), "default"))
    if opts.run_id is not None and not re.fullmatch(r"[\w.:@+-]{1,200}", opts.run_id):
        raise UsageError(f"--run-id {opts.run_id!r}: letters, digits and . _ - : @ + only")
    return opts


# --- the terminal: echo while it lasts ----------------------------------------------------------------------------

class Terminal:
    """The supervisor's stdout/stderr. When the terminal goes away, writes fail with EIO (a hung-up tty) or EPIPE (a
    closed pipe): from then on nothing is echoed, and the descriptors point at /dev/null so that no later write
    (the interpreter's own flush at exit included) can raise."""

    GONE = (errno.EIO, errno.EPIPE, errno.ENXIO, errno.EBADF, errno.ENOTCONN)
    CHUNK = 4096  # PIPE_BUF: a pipe select() calls writable takes this much without blocking
    WAIT = 0.2  # how long one write may wait for a slow reader before the echo is dropped

    def __init__(self, out_fd: int = 1, err_fd: int = 2) -> None:
        self.alive = True
        self.fds = (out_fd, err_fd)
        self.dropped = 0  # bytes of echo a stalled reader did not take (the log file has them all)

    def _write(self, fd: int, data: bytes) -> None:
        # never block: a reader that stopped reading (a stalled pipe, a suspended pager) must not keep the
        # supervisor from seeing the job end or from acting on SIGTERM
        if not self.alive:
            return
        try:
            while data:
                if not select.select([], [fd], [], self.WAIT)[1]:
                    self.dropped += len(data)
                    return
                n = os.write(fd, data[: self.CHUNK])
                data = data[n:]
        except BlockingIOError:
            return
        except ValueError:  # a descriptor select() cannot watch: write as before
            try:
                os.write(fd, data)
            except OSError:
                pass
            return
        except OSError as e:
            if e.errno not in self.GONE:
                raise
            self.hang_up()

    def hang_up(self) -> None:
        self.alive = False
        try:
            null = os.open(os.devnull, os.O_WRONLY)
            for fd in self.fds:
                os.dup2(null, fd)
            os.close(null)
        except OSError:
            pass

    def out(self, data: bytes) -> None:
        self._write(self.fds[0], data)

    def say(self, text: str) -> None:
        self._write(self.fds[1], (text if text.endswith("\n") else text + "\n").encode("utf-8", errors="replace"))


# --- processes ----------------------------------------------------------------------------------------------------

def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time) of a process, from /proc; None when it is gone or not visible."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    rest = data[data.rindex(b")") + 2:].split()
    if rest[0] in (b"Z", b"X"):
        return None  # a zombie has no memory, ports or GPUs left: nothing to stop
    return int(rest[1]), int(rest[19])


def descendants(root: int) -> set[tuple[int, int]]:
    """Every live process below `root`, as (pid, start time) so that a recycled pid is never mistaken for it."""
    table: dict[int, tuple[int, int]] = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return set()
    for name in names:
        if name.isdigit():
            st = _stat(int(name))
            if st is not None:
                table[int(name)] = st
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    out: set[tuple[int, int]] = set()
    todo = list(children.get(root, ()))
    while todo:
        pid = todo.pop()
        out.add((pid, table[pid][1]))
        todo.extend(children.get(pid, ()))
    return out


def _alive(procs: set[tuple[int, int]]) -> set[tuple[int, int]]:
    return {(p, t) for p, t in procs if (st := _stat(p)) is not None and st[1] == t}


def _signal_all(procs: set[tuple[int, int]], sig: int) -> None:
    for pid, _ in _alive(procs):
        try:
            os.kill(pid, sig)
        except OSError:
            pass


def _reap(procs: set[tuple[int, int]], skip: int) -> None:
    for pid, _ in procs:
        if pid != skip:
            try:
                os.waitpid(pid, os.WNOHANG)
            except OSError:
                pass


def _subreaper(on: bool) -> None:
    """Orphaned workers (torchrun starts each in its own session; when torchrun dies they go to init) are re-parented
    to the supervisor instead, so that it can still find and stop them."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(36, 1 if on else 0, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        pass


def _load_prctl() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _load_prctl()  # looked up before any fork: nothing is loaded between fork and exec
PR_SET_PDEATHSIG = 1


def _child_setup(parent: int) -> Any:
    def setup() -> None:  # pragma: no cover - runs in the child between fork and exec
        # SIG_IGN survives exec: the job gets the default actions back (its own session already shields it)
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
        signal.signal(signal.SIGTTOU, signal.SIG_DFL)
        # the job dies with its supervisor: a SIGKILLed `oomfix run` must not leave torchrun training unsupervised.
        # SIGTERM, not SIGKILL: torchrun's handler then stops its workers (which live in sessions of their own)
        if _PRCTL is not None:
            _PRCTL(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
            if os.getppid() != parent:  # the supervisor died between fork and prctl
                os.kill(os.getpid(), signal.SIGTERM)

    return setup


def exit_status(returncode: int) -> int:
    """Popen's -N (killed by signal N) in the shell's convention, 128 + N."""
    return 128 - returncode if returncode < 0 else returncode


# --- the supervisor -----------------------------------------------------------------------------------------------

class Supervisor:
    def __init__(self, opts: RunOptions, root: str = ".", term: Terminal | None = None) -> None:
        self.opts = opts
        self.root = root
        self.term = term or Terminal()
        self.stop_sig: int | None = None
        self.hurry = False
        self.base = base_log(opts.log)
        self.attempts: list[Attempt] = []
        self.extra_env: dict[str, str] = {}
        self.port: int | None = None
        # (real path, sha256) of every config state a relaunch started from: a rung that brings one back would
        # repeat a failure already seen
        self.seen_states: set[tuple[str, str]] = set()
        self.foreign: set[tuple[int, int]] = set()  # processes of ours that are not the job's (an embedding program's)
        # canonical key -> (before, after) of the last rung on the primary config: the relaunch's log must not show
        # a "before" value of a key the rung changed (the keys the log shows: micro batch, accumulation)
        self.last_change: dict[str, tuple[Any, Any]] = {}
        self.zero_switched = False  # the last rung changed the DeepSpeed config: no resume across it
        # names this run's records in the ledger (another supervisor may append to it at the same time); a run id
        # given (or the scheduler's job id under --once) spans processes: a requeued attempt continues the run
        self.run_id = opts.run_id or f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{os.getpid()}"
        self.history: list[Attempt] = []  # this run's attempts that earlier processes recorded
        self.fr_pending = False  # the next attempt gets the Flight Recorder environment
        self.current_env: dict[str, str] = {}  # what the attempt now running was given

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self.stop_sig is None:
            self.stop_sig = signum
        else:
            self.hurry = True  # a second Ctrl-C: no more grace

    @staticmethod
    def _sig_name(sig: int) -> str:
        return signal.Signals(sig).name

    # one attempt ------------------------------------------------------------------------------------------------
    def _launch(self, launch: Launch, log: str) -> subprocess.Popen[bytes]:
        env = {**os.environ, **launch.env}
        try:
            Path(log).parent.mkdir(parents=True, exist_ok=True)
            out = open(log, "wb")
        except OSError as e:
            raise InputError(f"{log}: cannot write the log: {e.strerror}") from None
        with out:
            try:
                return subprocess.Popen(list(launch.argv), stdin=subprocess.DEVNULL, stdout=out,
                                        stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                        preexec_fn=_child_setup(os.getpid()))
            except OSError as e:
                raise UsageError(f"{launch.argv[0]}: cannot run it: {e.strerror}") from None

    def _echo_from(self, f: Any) -> None:
        while True:
            chunk = f.read(1 << 20)
            if not chunk:
                return
            self.term.out(chunk)

    def _ours(self) -> set[tuple[int, int]]:
        """The job's processes: everything below the supervisor (orphans come back to it as the subreaper) that was
        not there before the run."""
        return descendants(os.getpid()) - self.foreign

    def _stop(self, proc: subprocess.Popen[bytes]) -> None:
        """SIGTERM to the job's process group, `grace` seconds, then SIGKILL to whatever of it is left (workers that
        torchrun started in sessions of their own included)."""
        assert self.stop_sig is not None
        self.term.say(f"oomfix run: {self._sig_name(self.stop_sig)}: stopping the job (SIGTERM to its process group, "
                      f"SIGKILL after {self.opts.grace:g} s or a second signal)")
        known = self._ours()
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except OSError:
            pass
        deadline = time.monotonic() + self.opts.grace
        while time.monotonic() < deadline:
            known |= self._ours()
            if proc.poll() is not None and not _alive(known):
                break
            if self.hurry:
                self.term.say("oomfix run: a second signal: SIGKILL now")
                break
            time.sleep(POLL_SECONDS)
        else:
            self.term.say("oomfix run: the grace period is over: SIGKILL")
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
        _signal_all(known, signal.SIGKILL)
        proc.wait()
        _reap(known, proc.pid)

    def _leftovers(self, proc: subprocess.Popen[bytes]) -> None:
        """Processes an attempt left behind (a worker that outlived torchrun) would hold the port and the GPU that
        the next attempt needs: SIGTERM, a short wait, SIGKILL."""
        left = _alive(self._ours())
        if not left:
            return
        self.term.say(f"oomfix run: stopping {len(left)} process(es) the attempt left behind")
        _signal_all(left, signal.SIGTERM)
        deadline = time.monotonic() + min(self.opts.grace, 5.0)
        while _alive(left) and time.monotonic() < deadline:
            _reap(left, proc.pid)
            time.sleep(POLL_SECONDS)
        _signal_all(left, signal.SIGKILL)
        time.sleep(POLL_SECONDS)
        _reap(left, proc.pid)

    def _run_attempt(self, launch: Launch, log: str) -> tuple[int, bool]:
        """(exit status, stopped by a signal to the supervisor)."""
        proc = self._launch(launch, log)
        stopped = False
        with open(log, "rb") as f:
            while True:
                rc = proc.poll()
                self._echo_from(f)
                if rc is not None:
                    break
                if self.stop_sig is not None:
                    self._stop(proc)
                    stopped = True
                    self._echo_from(f)
                    break
                time.sleep(POLL_SECONDS)
        if not stopped:
            self._leftovers(proc)
        assert proc.returncode is not None
        return exit_status(proc.returncode), stopped

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

    def _remedy(self, log: str, d: Diagnosis, relaunches_left: int) -> Remedy:
        """Apply what makes the relaunch different, and say what this failure means to a scheduler."""
        from oomfix.apply import plan_apply, write_plan
        from oomfix.report import Style, headline, render_plan_text
        from oomfix.rules import load_rules

        no_relaunch = f"no relaunch left (--retries {self.opts.retries})"
        if d.cls == "port_in_use":
            if relaunches_left <= 0:
                return Remedy(None, (), no_relaunch, verdicts.NO_RUNG)
            self.port = free_port()
            for k in PORT_ENV:
                self.extra_env[k] = str(self.port)
            self.term.say(f"oomfix run: {headline(d)}")
            self.term.say(f"oomfix run: relaunching with MASTER_PORT={self.port} (a free port)")
            return Remedy(PORT_RULE, (), None, verdicts.FIXED)
        if d.cls == "nccl_timeout":
            return self._nccl_timeout(log, relaunches_left)
        fc = load_rules(self.opts.rules_dir).classes.get(d.cls)
        automatic = fc is not None and fc.config_edits and not fc.launcher_fix \
            and (d.cls in MEMORY_CLASSES or d.cls == "nan_loss")
        if not automatic:
            return Remedy(None, (), f"{d.cls} has no automatic remedy; fix its cause, then run again",
                          verdicts.for_class_without_remedy(d.cls))
        if d.confidence == "low":
            return Remedy(None, (), f"{d.cls} is only a low-confidence diagnosis ({d.reason}); not changing configs "
                                    f"on it", verdicts.PERMANENT)
        same = self._same_failure(log, d)
        if same is not None:
            return Remedy(None, (), same, verdicts.FIXED)
        if relaunches_left <= 0:
            return Remedy(None, (), f"{no_relaunch}; `oomfix apply {log}` shows the next fix", verdicts.NO_RUNG)
        done = [*self.history, *self.attempts]
        prev = done[-1] if done else None
        stale = not_picked_up(self.last_change, d.run.canonical_values())
        if prev is not None and prev.files and prev.cls == d.cls and stale:
            return Remedy(None, (), f"the relaunch did not pick up the last edit ({prev.rule}): its log still shows "
                                    f"{stale}; is {self.opts.config or 'the config'} the one CMD trains with?",
                          verdicts.PERMANENT)
        plan = plan_apply(log, self.opts.config, self.opts.all_configs, self.opts.allow_semantic, self.opts.rules_dir,
                          root=self.root)
        if plan.status == "already":  # the fix for this very log is in place: relaunching is what is left to do
            return Remedy(plan.rule, (), plan.message, verdicts.FIXED)
        if plan.status != "edits":  # no rung left, advice only: the diagnosis and why
            return Remedy(None, (), plan.message or f"no fix to apply ({plan.status})",
                          verdicts.NO_RUNG if plan.status == "no_rung" else verdicts.PERMANENT)
        after = {(os.path.realpath(e.path), _sha_text(e.after)) for e in plan.edits if e.kind == "config"}
        if after and after <= self.seen_states:
            return Remedy(None, (), f"rule {plan.rule} would bring back a config already tried; not repeating it",
                          verdicts.NO_RUNG)
        before = _canonical(plan)
        tx = write_plan(plan, root=self.root, explicit=[self.opts.config] if self.opts.config else [])
        if tx is None:
            return Remedy(plan.rule, (), "this log was already applied by another oomfix; not relaunching on top "
                                         "of it", verdicts.FIXED)
        self.last_change = changed_keys(before, _canonical(plan))
        self.seen_states |= after
        for e in plan.edits:
            if e.kind == "launcher":
                # the rung's environment, for the relaunch too: CMD may not be the launcher script it went into
                self.extra_env.update({k: str(v) for k, _, v in e.changes if re.fullmatch(r"[A-Z_][A-Z0-9_]*", k)})
        self.term.say(render_plan_text(plan, True, Style(sys.stderr)).rstrip("\n"))
        self.zero_switched = any(k.split(".")[-1] == "deepspeed" for e in plan.edits for k, _, _ in e.changes)
        return Remedy(plan.rule, tuple(e.path for e in plan.edits), None, verdicts.FIXED)

    def _nccl_timeout(self, log: str, relaunches_left: int) -> Remedy:
        """The first NCCL timeout of a run: relaunch with the Flight Recorder on (no config change), so that the
        next timeout leaves dumps saying which rank missed which collective. A timeout with the recorder already on:
        read its dumps and stop (a relaunch would only hang again)."""
        from oomfix import flightrec

        if flightrec.DUMP_ENV in self.current_env:
            dumps = flightrec.find_dumps(log, self.current_env.get(flightrec.PREFIX_ENV))
            text = flightrec.render_text(flightrec.analyze(dumps)) if dumps else "no Flight Recorder dump was found"
            for line in text.rstrip("\n").splitlines():
                self.term.say(f"oomfix run: {line}")
            return Remedy(None, (), "an NCCL timeout again, with the Flight Recorder on: the ranks above did not "
                                    "enter the collective; fix that, do not relaunch", verdicts.PERMANENT)
        if relaunches_left <= 0:
            return Remedy(None, (), f"no relaunch left (--retries {self.opts.retries})", verdicts.NO_RUNG)
        self.fr_pending = True
        self.term.say("oomfix run: an NCCL timeout: relaunching with the Flight Recorder on "
                      f"({', '.join(flightrec.ENV_NAMES)}); no config is changed")
        return Remedy(FR_RULE, (), None, verdicts.FIXED)

    def _same_failure(self, log: str, d: Diagnosis) -> str | None:
        """A log written before the last rung's edit cannot come from a run that used it: a second log of the same
        failure (another node's, or the same log under another name) gets no second rung."""
        try:  # any run's: two nodes' supervisors (two runs) see one OOM in their own logs
            recorded = ledger.read(self.root)
        except OomfixError:
            recorded = []
        last = next((a for a in reversed([*recorded, *self.history, *self.attempts]) if a.files and a.rule), None)
        if last is None or last.cls != d.cls:
            return None
        if self.opts.config and not any(os.path.exists(f) and os.path.samefile(f, self.opts.config)
                                         for f in last.files):
            return None  # the last fix went to other configs: this log's config has not been fixed
        try:
            log_m = os.stat(log).st_mtime
            edit_m = max(os.stat(os.path.join(self.root, f)).st_mtime for f in last.files)
        except (OSError, ValueError):
            return None
        if log_m > edit_m:
            return None
        return (f"{log} was written before the last fix ({last.rule} after attempt {last.attempt}): the same "
                f"failure, seen again; not climbing a second rung for it")

    def _next_launch(self, n: int, log: str) -> Launch:
        from oomfix import flightrec

        argv: tuple[str, ...] = tuple(self.opts.cmd)
        if self.port is not None:
            argv = with_port(argv, self.port)
        if flightrec.PREFIX_ENV in self.extra_env:
            # a fresh dump directory per attempt: a dump is then always this attempt's
            prefix = flightrec.prefix_for(log)
            self.extra_env[flightrec.PREFIX_ENV] = prefix
            Path(prefix).parent.mkdir(parents=True, exist_ok=True)
        if self.opts.resume and (self.attempts or self.history):
            if self.zero_switched:
                self.term.say("oomfix run: not resuming: the fix changed the ZeRO stage, and a DeepSpeed checkpoint "
                              "of one stage does not load under another (convert it to a universal checkpoint first)")
            else:
                new, why = resume_argv(argv, self.opts.config, say=self.term.say)
                self.term.say(f"oomfix run: {'' if new else 'not resuming: '}{why}")
                argv = new or argv
        return Launch(argv, dict(self.extra_env))

    # the loop ---------------------------------------------------------------------------------------------------
    def run(self) -> RunResult:
        handled = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)  # USR1: SLURM's --signal=B:USR1@T warning
        previous = {s: signal.signal(s, self._on_signal) for s in handled}
        # a closing terminal sends SIGHUP; a supervisor left in the background of one may get SIGTTOU for writing
        ignored = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGHUP, signal.SIGTTOU)}
        self.foreign = descendants(os.getpid())
        _subreaper(True)
        try:
            if not self.opts.once:
                return self._finish(self._loop())
            with ledger.run_lock(self.run_id, self.root, on_wait=lambda: self.term.say(
                    f"oomfix run: another attempt of run {self.run_id} is in progress; waiting for it to end")):
                return self._finish(self._loop())
        finally:
            _subreaper(False)
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

    def _record(self, rec: Attempt) -> Attempt:
        rec = replace(rec, run=self.run_id, host=ledger.hostname(), next_env=dict(self.extra_env))
        self.attempts.append(rec)
        try:
            ledger.append(rec, self.root)
        except OSError as e:
            self.term.say(f"oomfix run: cannot write the ledger: {e.strerror}")
        except OomfixError as e:
            self.term.say(f"oomfix run: cannot write the ledger: {e}")
        return rec

    def _notify(self, event: str, rec: Attempt, why: str | None) -> None:
        if not (self.opts.notify or self.opts.notify_url):
            return
        from oomfix import notify

        for problem in notify.send(event, notify.payload(event, rec, why), self.opts.notify, self.opts.notify_url):
            self.term.say(f"oomfix run: notification: {problem}")

    def _started(self, n: int, launch: Launch, log: str) -> None:
        try:
            ledger.append(Started(n, launch.shown(), _now(), log, self.run_id, ledger.hostname(), os.getpid()),
                          self.root)
        except OSError as e:
            self.term.say(f"oomfix run: cannot write the ledger: {e.strerror}")
        except OomfixError as e:
            self.term.say(f"oomfix run: cannot write the ledger: {e}")

    def _load_history(self) -> int:
        """The attempts of this run that earlier processes recorded (a requeue, another node): their number, and the
        environment the last one asked the next attempt to set."""
        try:
            events = ledger.of_run(ledger.read_events(self.root), self.run_id)
        except OomfixError as e:
            self.term.say(f"oomfix run: cannot read the ledger: {e}")
            return 0
        self.history = [e for e in events if isinstance(e, Attempt)]
        if self.history:
            last = self.history[-1]
            self.extra_env.update(last.next_env)
            self.zero_switched = "zero_config" in last.changed  # no resume across a ZeRO stage switch
            self.last_change = dict(last.changed)
            if last.next_env.get(PORT_ENV[0], "").isdigit():  # an explicit port on CMD is replaced by it too
                self.port = int(last.next_env[PORT_ENV[0]])
            self.term.say(f"oomfix run: run {self.run_id}: attempts 1..{len(events) and max(e.attempt for e in events)}"
                          f" are in the ledger; the last ended {last.verdict or last.cls or 'unrecorded'}"
                          + (f", rule {last.rule}" if last.rule else ""))
        for s in ledger.unfinished(events):
            self.term.say(f"oomfix run: attempt {s.attempt} (started {s.started} on {s.host}, pid {s.pid}) has no end "
                          f"record: its supervisor was killed; counted as an attempt")
        return max((e.attempt for e in events), default=0)

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

            self.seen_states.add((os.path.realpath(self.opts.config), file_sha256(self.opts.config) or ""))
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
            launch = self._next_launch(n, log)
            self.current_env = dict(launch.env)
            self.term.say(f"oomfix run: attempt {n}: {launch.shown()}")
            self.term.say(f"oomfix run: log: {log}")
            started = _now()
            t_start = time.time()
            self._started(n, launch, log)
            status, stopped = self._run_attempt(launch, log)
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
                return RunResult(128 + self.stop_sig, tuple(self.attempts), f"stopped by {name}", verdicts.OUTSIDE)
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
                    relaunches_left = self.opts.retries - (n - 1) if self.opts.once else \
                        self.opts.retries - (n - first)
                    rem = self._remedy(diag_log, d, relaunches_left)
                except KeyboardInterrupt:  # Ctrl-C while the journal held it: the transaction was rolled back
                    self.stop_sig = self.stop_sig or signal.SIGINT
                    rem = Remedy(None, (), "interrupted", verdicts.OUTSIDE)
                except OomfixError as e:
                    rem = Remedy(None, (), str(e), verdicts.PERMANENT)
            stop_name = self._sig_name(self.stop_sig) if self.stop_sig is not None else None
            verdict = verdicts.OUTSIDE if stop_name else rem.verdict
            if not rem.files:
                self.last_change = {}
            rec = Attempt(n, launch.shown(), started, ended, status, log, d.cls if d else None, rem.rule,
                          tuple(os.path.relpath(f) for f in rem.files), stop_name, verdict=verdict.name,
                          changed=dict(self.last_change))
            if self.fr_pending:  # the next attempt's dumps go beside its log; recorded for a requeue too
                from oomfix import flightrec

                self.extra_env.update(flightrec.relaunch_env(attempt_log(self.base, n + 1)))
                self.fr_pending = False
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
        return RunResult(128 + self.stop_sig, tuple(self.attempts), f"stopped by {name}", verdicts.OUTSIDE)


def _canonical(plan: Any) -> dict[str, Any]:
    """The canonical values of the plan's first config (the primary one), as the dialect reads them now."""
    from oomfix.configs import try_load

    path = next((e.path for e in plan.edits if e.kind == "config"), None)
    cfg = try_load(path) if path else None
    return dict(cfg.values) if cfg is not None else {}


def changed_keys(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """What a rung changed, canonical key -> (before, after)."""
    return {k: (before.get(k), after.get(k)) for k in set(before) | set(after) if before.get(k) != after.get(k)}


def not_picked_up(change: Mapping[str, tuple[Any, Any]], shown: Mapping[str, Any]) -> dict[str, Any]:
    """The keys the last rung changed that the relaunch's log still shows at their old value (empty: picked up, or
    the log does not show any key the rung changed: gradient checkpointing, a ZeRO config switch, offload)."""
    return {k: shown[k] for k, (old, new) in change.items() if k in shown and shown[k] == old and old != new}


def _sha_text(text: str) -> str:
    from oomfix.journal import sha256

    return sha256(text.encode("utf-8", errors="surrogateescape"))


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
    pid: int
    base_log: str
    supervisor_log: str

    def describe(self) -> Iterator[str]:
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


# --- `oomfix verdict LOG`: the verdict of a log the scheduler's own step produced --------------------------------

@dataclass(frozen=True)
class LogVerdict:
    verdict: Verdict
    diagnosis: Diagnosis
    reason: str
    rule: str | None = None
    files: tuple[str, ...] = ()
    written: bool = False
    next_env: Mapping[str, str] = field(default_factory=dict)


def verdict_of_log(log: str, opts: RunOptions, write: bool = False, root: str = ".",
                   term: Terminal | None = None) -> LogVerdict:
    """Diagnose LOG and say what it means to a scheduler. Dry run by default (the verdict the fix would give); with
    `write` the fix is applied exactly as `run --once` applies it, and the verdict is recorded in the ledger under
    the run id (so that the next attempt sets what it must, e.g. a free port or the Flight Recorder)."""
    from oomfix.apply import plan_apply
    from oomfix.diagnose import diagnose_logs
    from oomfix import flightrec

    d = diagnose_logs([log], config=opts.config, rules_dir=opts.rules_dir)
    if d.cls == "none":
        return LogVerdict(verdicts.TRAINED, d, "the log shows no failure")
    if opts.run_id is None:
        opts = replace(opts, run_id=next((os.environ[k] for k in RUN_ID_ENV if os.environ.get(k)), "default"))
    if write:
        sup = Supervisor(replace(opts, once=True), root, term or Terminal(2, 2))
        n = sup._load_history()
        sup.current_env = dict(sup.extra_env)
        try:
            rem = sup._remedy(log, d, opts.retries - n)
        except KeyboardInterrupt:
            raise
        if sup.fr_pending:
            sup.extra_env.update(flightrec.relaunch_env(log))
        rec = Attempt(n + 1, "(oomfix verdict)", _now(), _now(), 1, log, d.cls, rem.rule,
                      tuple(os.path.relpath(f) for f in rem.files), verdict=rem.verdict.name)
        rec = sup._record(rec)
        return LogVerdict(rem.verdict, d, rem.why or f"applied {rem.rule}", rem.rule, rec.files, bool(rem.files),
                          dict(sup.extra_env))
    if d.cls == "port_in_use":
        return LogVerdict(verdicts.FIXED, d, "relaunch on a free port (`--write` records MASTER_PORT for the next "
                                             "attempt)")
    if d.cls == "nccl_timeout":
        dumps = flightrec.find_dumps(log)
        if dumps:
            return LogVerdict(verdicts.PERMANENT, d, flightrec.render_text(flightrec.analyze(dumps)).rstrip("\n"))
        return LogVerdict(verdicts.FIXED, d, "relaunch with the Flight Recorder on: "
                                             + " ".join(f"{k}={v}" for k, v in flightrec.relaunch_env(log).items()),
                          FR_RULE, next_env=flightrec.relaunch_env(log))
    if d.cls not in MEMORY_CLASSES and d.cls != "nan_loss":
        v = verdicts.for_class_without_remedy(d.cls)
        return LogVerdict(v, d, f"{d.cls}: {v.meaning}")
    plan = plan_apply(log, opts.config, opts.all_configs, opts.allow_semantic, opts.rules_dir, root=root)
    if plan.status in ("edits", "already"):
        return LogVerdict(verdicts.FIXED, d, plan.message or f"rule {plan.rule} (dry run: `--write` applies it)",
                          plan.rule, tuple(e.path for e in plan.edits))
    v = verdicts.NO_RUNG if plan.status == "no_rung" else verdicts.PERMANENT
    return LogVerdict(v, d, plan.message or v.meaning)
