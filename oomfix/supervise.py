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
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from oomfix import ledger
from oomfix.errors import InputError, OomfixError, UsageError
from oomfix.ledger import Attempt
from oomfix.model import MEMORY_CLASSES, Diagnosis

GRACE_SECONDS = 30.0  # what torchrun gives its workers between SIGTERM and SIGKILL
POLL_SECONDS = 0.1
PORT_RULE = "port-in-use-free-master-port"
# torchrun reads every option from PET_<NAME> when it is not on the command line (torch/distributed/argparse_util.py);
# MASTER_PORT is what llamafactory-cli, `deepspeed` and a bare init_process_group(env://) read
PORT_ENV = ("MASTER_PORT", "PET_MASTER_PORT")
_PORT_OPTS = ("--master_port", "--master-port", "--main_process_port", "--main-process-port")
_ENDPOINT_OPTS = ("--rdzv_endpoint", "--rdzv-endpoint")
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")  # transformers.trainer_utils.PREFIX_CHECKPOINT_DIR + "-N"


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


@dataclass(frozen=True)
class RunResult:
    exit_code: int
    attempts: tuple[Attempt, ...]
    reason: str  # why the loop ended, one line


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


def resume_argv(argv: Sequence[str], config: str | None) -> tuple[tuple[str, ...] | None, str]:
    """The command resuming from the newest checkpoint of its output directory, for one attempt (the config is not
    edited), or None and why not.

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
        ckpt = newest_checkpoint(flag_dir)
        if ckpt is None:
            return None, f"no checkpoint-N in {flag_dir}"
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
    ckpt = newest_checkpoint(out_dir)
    if ckpt is None:
        return None, f"no checkpoint-N in {out_dir}"
    return (*toks, f"resume_from_checkpoint={ckpt}"), f"resuming from {ckpt}"


def config_of_command(argv: Sequence[str], cwd: str = ".") -> str | None:
    """The training config CMD starts, read the way `oomfix jobs` reads a launcher line (or the script CMD runs)."""
    from oomfix.launcher import job_path, parse_launcher

    here = os.path.abspath(cwd)
    try:
        lau = parse_launcher(os.path.join(here, "oomfix-run-command.sh"), shlex.join(argv))
        if not lau.jobs and len(argv) >= 2 and os.path.basename(argv[0]) in ("bash", "sh") \
                and os.path.isfile(argv[1]):
            lau = parse_launcher(argv[1])
    except OomfixError:
        return None  # an unreadable script: the config comes from --config or the log
    paths = {p for j in lau.jobs if j.config and (p := job_path(j, j.config))}
    if len(paths) != 1:
        return None
    return os.path.relpath(paths.pop(), here)


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
    if opts.config is None:
        opts = replace(opts, config=config_of_command(opts.cmd))
    return opts


# --- the terminal: echo while it lasts ----------------------------------------------------------------------------

class Terminal:
    """The supervisor's stdout/stderr. When the terminal goes away, writes fail with EIO (a hung-up tty) or EPIPE (a
    closed pipe): from then on nothing is echoed, and the descriptors point at /dev/null so that no later write
    (the interpreter's own flush at exit included) can raise."""

    GONE = (errno.EIO, errno.EPIPE, errno.ENXIO, errno.EBADF, errno.ENOTCONN)

    def __init__(self, out_fd: int = 1, err_fd: int = 2) -> None:
        self.alive = True
        self.fds = (out_fd, err_fd)

    def _write(self, fd: int, data: bytes) -> None:
        if not self.alive:
            return
        try:
            while data:
                n = os.write(fd, data)
                data = data[n:]
        except BlockingIOError:
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


def _reset_hup() -> None:  # pragma: no cover - runs in the child between fork and exec
    # SIG_IGN survives exec: the job gets the default actions back (its own session already shields it)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    signal.signal(signal.SIGTTOU, signal.SIG_DFL)


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
        # names this run's records in the ledger (another supervisor may append to it at the same time)
        self.run_id = f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{os.getpid()}"

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
                                        preexec_fn=_reset_hup)
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

    def _remedy(self, log: str, d: Diagnosis, relaunches_left: int) -> tuple[str | None, tuple[str, ...], str | None]:
        """Apply what makes the relaunch different: (rule, files edited, why the loop stops instead)."""
        from oomfix.apply import plan_apply, write_plan
        from oomfix.report import Style, headline, render_plan_text
        from oomfix.rules import load_rules

        if d.cls == "port_in_use":
            if relaunches_left <= 0:
                return None, (), f"no relaunch left (--retries {self.opts.retries})"
            self.port = free_port()
            for k in PORT_ENV:
                self.extra_env[k] = str(self.port)
            self.term.say(f"oomfix run: {headline(d)}")
            self.term.say(f"oomfix run: relaunching with MASTER_PORT={self.port} (a free port)")
            return PORT_RULE, (), None
        fc = load_rules(self.opts.rules_dir).classes.get(d.cls)
        automatic = fc is not None and fc.config_edits and not fc.launcher_fix \
            and (d.cls in MEMORY_CLASSES or d.cls == "nan_loss")
        if not automatic:
            return None, (), f"{d.cls} has no automatic remedy; fix its cause, then run again"
        if d.confidence == "low":
            return None, (), f"{d.cls} is only a low-confidence diagnosis ({d.reason}); not changing configs on it"
        if relaunches_left <= 0:
            return None, (), (f"no relaunch left (--retries {self.opts.retries}); `oomfix apply {log}` shows the "
                              f"next fix")
        prev = self.attempts[-1] if self.attempts else None
        stale = not_picked_up(self.last_change, d.run.canonical_values())
        if prev is not None and prev.files and prev.cls == d.cls and stale:
            return None, (), (f"the relaunch did not pick up the last edit ({prev.rule}): its log still shows "
                              f"{stale}; is {self.opts.config or 'the config'} the one CMD trains with?")
        plan = plan_apply(log, self.opts.config, self.opts.all_configs, self.opts.allow_semantic, self.opts.rules_dir,
                          root=self.root)
        if plan.status != "edits":  # no rung left, advice only, already applied: the diagnosis and why
            return None, (), plan.message or f"no fix to apply ({plan.status})"
        after = {(os.path.realpath(e.path), _sha_text(e.after)) for e in plan.edits if e.kind == "config"}
        if after and after <= self.seen_states:
            return None, (), f"rule {plan.rule} would bring back a config already tried; not repeating it"
        before = _canonical(plan)
        tx = write_plan(plan, root=self.root, explicit=[self.opts.config] if self.opts.config else [])
        if tx is None:
            return None, (), "this log was already applied by another oomfix; not relaunching on top of it"
        self.last_change = changed_keys(before, _canonical(plan))
        self.seen_states |= after
        for e in plan.edits:
            if e.kind == "launcher":
                # the rung's environment, for the relaunch too: CMD may not be the launcher script it went into
                self.extra_env.update({k: str(v) for k, _, v in e.changes if re.fullmatch(r"[A-Z_][A-Z0-9_]*", k)})
        self.term.say(render_plan_text(plan, True, Style(sys.stderr)).rstrip("\n"))
        self.zero_switched = any(k.split(".")[-1] == "deepspeed" for e in plan.edits for k, _, _ in e.changes)
        return plan.rule, tuple(e.path for e in plan.edits), None

    def _next_launch(self) -> Launch:
        argv: tuple[str, ...] = tuple(self.opts.cmd)
        if self.port is not None:
            argv = with_port(argv, self.port)
        if self.opts.resume and self.attempts:
            if self.zero_switched:
                self.term.say("oomfix run: not resuming: the fix changed the ZeRO stage, and a DeepSpeed checkpoint "
                              "of one stage does not load under another (convert it to a universal checkpoint first)")
            else:
                new, why = resume_argv(argv, self.opts.config)
                self.term.say(f"oomfix run: {'' if new else 'not resuming: '}{why}")
                argv = new or argv
        return Launch(argv, dict(self.extra_env))

    # the loop ---------------------------------------------------------------------------------------------------
    def run(self) -> RunResult:
        handled = (signal.SIGINT, signal.SIGTERM)
        previous = {s: signal.signal(s, self._on_signal) for s in handled}
        # a closing terminal sends SIGHUP; a supervisor left in the background of one may get SIGTTOU for writing
        ignored = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGHUP, signal.SIGTTOU)}
        self.foreign = descendants(os.getpid())
        _subreaper(True)
        try:
            return self._loop()
        finally:
            _subreaper(False)
            for s, h in ignored.items():
                signal.signal(s, h)
            for s, h in previous.items():
                signal.signal(s, h)

    def _record(self, rec: Attempt) -> None:
        rec = replace(rec, run=self.run_id)
        self.attempts.append(rec)
        try:
            ledger.append(rec, self.root)
        except OSError as e:
            self.term.say(f"oomfix run: cannot write the ledger: {e.strerror}")

    def _loop(self) -> RunResult:
        n = 0
        if self.opts.config:
            from oomfix.journal import file_sha256

            self.seen_states.add((os.path.realpath(self.opts.config), file_sha256(self.opts.config) or ""))
            self.term.say(f"oomfix run: config: {self.opts.config}")
        else:
            self.term.say("oomfix run: CMD names no config oomfix can read: a fix will go to the config the log names, "
                          "or the loop stops and asks for --config")
        while True:
            n += 1
            if self.stop_sig is not None:  # a signal between two attempts: no relaunch
                return self._stopped_between()
            launch = self._next_launch()
            log = attempt_log(self.base, n)
            self.term.say(f"oomfix run: attempt {n}: {launch.shown()}")
            self.term.say(f"oomfix run: log: {log}")
            started = _now()
            status, stopped = self._run_attempt(launch, log)
            ended = _now()
            if stopped:
                assert self.stop_sig is not None
                d = self._diagnose(log)
                name = self._sig_name(self.stop_sig)
                self._record(Attempt(n, launch.shown(), started, ended, status, log, d.cls if d else None,
                                     stopped_by=name))
                self.term.say(f"oomfix run: stopped by {name}; attempt {n} recorded as stopped, no relaunch")
                return RunResult(128 + self.stop_sig, tuple(self.attempts), f"stopped by {name}")
            if status == 0:
                self._record(Attempt(n, launch.shown(), started, ended, 0, log, "none"))
                self.term.say(f"oomfix run: attempt {n} trained (exit 0)")
                return RunResult(0, tuple(self.attempts), "trained")
            self.term.say(f"oomfix run: attempt {n} failed (exit {status}); diagnosing {log}")
            d = self._diagnose(log)
            rule, files, why = None, (), "the log could not be diagnosed"
            if d is not None:
                try:
                    rule, files, why = self._remedy(log, d, self.opts.retries - (n - 1))
                except KeyboardInterrupt:  # Ctrl-C while the journal held it: the transaction was rolled back
                    self.stop_sig = self.stop_sig or signal.SIGINT
                    rule, files, why = None, (), "interrupted"
                except OomfixError as e:
                    rule, files, why = None, (), str(e)
            stop_name = self._sig_name(self.stop_sig) if self.stop_sig is not None else None
            self._record(Attempt(n, launch.shown(), started, ended, status, log, d.cls if d else None, rule,
                                 tuple(os.path.relpath(f) for f in files), stop_name))
            if not files:
                self.last_change = {}
            if why is not None:
                if self.stop_sig is None:
                    self._print_stop(d, why)
                    return RunResult(status, tuple(self.attempts), why)
                return RunResult(128 + self.stop_sig, tuple(self.attempts), f"stopped by {stop_name}")

    def _stopped_between(self) -> RunResult:
        assert self.stop_sig is not None
        name = self._sig_name(self.stop_sig)
        self.term.say(f"oomfix run: {name}: not relaunching")
        return RunResult(128 + self.stop_sig, tuple(self.attempts), f"stopped by {name}")


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
                     ("--resume", opts.resume)):
        if on:
            argv.append(flag)
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
