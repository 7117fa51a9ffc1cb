"""From events to a diagnosis: the earliest originating failure, and the cascade it caused.

The class is the root cause, never a consequence. SIGTERM victims, the agent's ChildFailedError, a wrapper's
CalledProcessError, a rendezvous closed by another node and gloo/NCCL "the peer went away" errors are what a
death looks like from the survivors; they are collected as the cascade and never become the class.
"""
from __future__ import annotations

import ast
import bisect
import re
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

from oomfix import patterns as P
from oomfix.events import REPEATABLE, SIGNALS, Event, events, signal_name, strip_prefixes
from oomfix.model import CascadeEntry, Diagnosis, Evidence, MemoryInfo, RootCause, RunParams
from oomfix.reader import Prefilter, default_prefilter, open_log, scan

# Exceptions that report someone else's death. Sources: torch/distributed/elastic (ChildFailedError,
# SignalException, RendezvousClosedError), subprocess, gloo's pair.cc ("Connection closed by peer ... typically
# caused by a remote worker crashing"), c10d's "remote process exited or there was a network error".
# Ray (python/ray/exceptions.py): RayTaskError(X) wraps the actor's exception X, whose own traceback is printed in the
# same log; ActorDiedError / WorkerCrashedError / ActorUnavailableError report a worker process that died.
_CONSEQUENCE_EXC = re.compile(
    r"(?:^|\.)(?:ChildFailedError|CalledProcessError|SignalException|RendezvousClosedError|SystemExit|"
    r"KeyboardInterrupt|BrokenPipeError|RayTaskError|RayActorError|ActorDiedError|WorkerCrashedError|"
    r"ActorUnavailableError|RaySystemError)$")
# what Ray's RayTaskError(X) says on its own, when X's traceback is not in the log: an ordinary exception is a bug in the
# actor; OutOfMemoryError raised inside an actor is torch's (Ray's own memory kill is not wrapped); anything else
# (RuntimeError, ...) is said by the inner traceback or not at all
_RAY_INNER = {"OutOfMemoryError": "cuda_oom", **{x: "python_exception" for x in (
    "KeyError", "ValueError", "TypeError", "AttributeError", "IndexError", "FileNotFoundError", "ImportError",
    "ModuleNotFoundError", "AssertionError", "NameError", "NotImplementedError", "ZeroDivisionError")}}
_CONSEQUENCE_MSG = re.compile(
    r"Connection closed by peer|remote worker crashing|Connection reset by peer|remote process exited|"
    r"Broken pipe|terminated with signal|Socket Timeout|Connection refused|communicator was aborted|"
    # c10d TCPStore (Utils.hpp recvBytes, TCPStore.cpp): the store's host (rank 0) went away
    r"failed to recv, got 0 bytes|Connection was likely closed|Did the remote server shutdown or crash", re.I)
# a worker process that died without saying why: /dev/shm or the OOM killer; guessing either could be harmful. torch's
# DataLoader ("DataLoader worker (pid 42) exited unexpectedly"), HF datasets' map with num_proc (utils/py_utils.py
# iflatmap_unordered: "One of the subprocesses has abruptly died during map operation."), concurrent.futures
# (BrokenProcessPool: "A process in the process pool was terminated abruptly")
_UNEXPLAINED_MSG = re.compile(r"DataLoader worker \(pid\(?s?\)? [\d, ]+\) exited unexpectedly|"
                              r"One of the subprocesses has abruptly died|"
                              r"A process in the process pool was terminated abruptly")

# message -> class, for exception lines whose wording the line patterns did not claim
_EXC_MESSAGE_CLASSES = (
    (re.compile(r"running low on memory|memory pressure|memory usage threshold"), "host_oom"),  # Ray's monitor
    (re.compile(r"out of memory|OutOfMemoryError|CUBLAS_STATUS_ALLOC_FAILED", re.I), "cuda_oom"),
    (re.compile(r"Watchdog caught collective operation timeout|before timing out"), "nccl_timeout"),
    (re.compile(r"NCCL [Ee]rror|nccl\w*Error"), "nccl_error"),
    (re.compile(r"EADDRINUSE|[Aa]ddress already in use|failed to listen"), "port_in_use"),
    (re.compile(r"CUDA error|HIP error|device-side assert|illegal memory access|CUBLAS_STATUS|CUDNN_STATUS"),
     "cuda_error"),
    (re.compile(r"returned (?:nan|inf) values|is non-finite|\b(?:loss|Loss) is (?:nan|NaN|inf)\b"), "nan_loss"),
)
# exception types whose module says what failed, whatever their message (torch 2.8+ AcceleratorError, c10d's
# DistBackendError = a communication backend failure)
# FloatingPointError: what fairseq and detectron2 raise on a diverged loss
_EXC_TYPE_CLASSES = {"AcceleratorError": "cuda_error", "DistBackendError": "nccl_error", "FloatingPointError": "nan_loss"}

# srun names the signal that ended a task in strsignal() words
_SRUN_SIGNAL_WORDS = {"Killed": -9, "Terminated": -15, "Aborted": -6, "Bus error": -7, "Segmentation fault": -11,
                      "Hangup": -1}
_SIGNAL_NUMBERS = {name: num for num, name in SIGNALS.items()}
_SIGNAL_DEATH_CLASS = {"SIGKILL": ("host_oom", "low"), "SIGBUS": ("shm_bus_error", "medium"),
                       "SIGSEGV": ("segfault", "medium")}
_CONF_RANK = {"high": 3, "medium": 2, "low": 1}
_CONF_NAME = {3: "high", 2: "medium", 1: "low"}

_UNITS = {"B": 1 / 2**30, "KB": 1 / 2**20, "KiB": 1 / 2**20, "MB": 1 / 2**10, "MiB": 1 / 2**10, "GB": 1.0,
          "GiB": 1.0, "TB": 1024.0, "TiB": 1024.0}
_SIZE = r"([\d.]+) ?([KMGT]?i?B)"
_OOM_OLD = re.compile(
    rf"Tried to allocate {_SIZE} \(GPU (\d+); {_SIZE} total capac\w*; {_SIZE} already allocated; {_SIZE} free; "
    rf"(?:{_SIZE} allowed; )?{_SIZE} reserved in total by PyTorch")
_OOM_NEW = re.compile(rf"Tried to allocate {_SIZE}\. GPU (\d+) has a total capacity of {_SIZE} of which {_SIZE} "
                      r"is free")
_OOM_PROC = re.compile(rf"Process (\d+) has {_SIZE} memory in use")
_OOM_THIS = re.compile(rf"this process has {_SIZE} memory in use")
_OOM_ALLOC = re.compile(rf"Of the allocated memory {_SIZE} is allocated by PyTorch, and {_SIZE} is reserved by "
                        r"PyTorch but unallocated")
_OOM_GPU = re.compile(r"(?:GPU|device) (\d+)")

_DESCRIBE = {
    "sighup": "the torchrun agent received SIGHUP (the launching terminal closed)",
    "sigterm": "the job was stopped from outside (SIGTERM)",
    "cuda_oom": "CUDA out of memory",
    "host_oom": "host RAM exhausted (killed by the OOM killer)",
    "nccl_timeout": "NCCL collective timed out",
    "nccl_error": "NCCL communication error",
    "port_in_use": "the master port is already in use",
    "shm_bus_error": "bus error: /dev/shm too small",
    "segfault": "segmentation fault",
    "cuda_error": "CUDA error (not capacity)",
    "nan_loss": "the loss diverged (NaN)",
    "python_exception": "a Python exception",
    "unknown": "a failure whose cause the log does not show",
    "none": "no failure in the log",
}


def describe(cls: str, confidence: str | None = None) -> str:
    """The class in words; a host-memory kill known only from a bare SIGKILL says only what is known."""
    if cls == "host_oom" and confidence == "low":
        return ("a process was killed with SIGKILL; the log does not say who sent it (the kernel OOM killer is the "
                "usual sender, a scheduler or a person are the others)")
    return _DESCRIBE.get(cls, cls)


@dataclass
class _Death:
    pid: int | None
    local_rank: int | None
    exitcode: int | None
    line: int
    file: str
    text: str
    time: str | None = None
    rank: int | None = None
    host: str | None = None
    signal: str | None = None
    root_hint: bool = False
    event: Event | None = None


@dataclass
class _Cause:
    cls: str
    confidence: str
    event: Event
    reason: str | None = None
    exception: str | None = None
    message: str | None = None
    death: _Death | None = None
    signal: str | None = None
    note: str | None = None  # said whatever the confidence: which of two failures came first


@dataclass
class _FileState:
    file: str
    events: list[Event] = field(default_factory=list)
    deaths: dict[int | str, _Death] = field(default_factory=dict)
    closing: dict[int, tuple[str, Event]] = field(default_factory=dict)
    failure_seen: bool = False
    error_seen: bool = False
    finished: bool = False
    attempt_line: int = 0  # the last launch in the file starts here: what came before is an earlier attempt
    finish_line: int | None = None  # the last clean finish of this attempt

    @property
    def failed(self) -> bool:
        """The log shows a failure: a traceback, a death, a stop; or error-level lines without a clean finish."""
        return self.failure_seen or (self.error_seen and not self.finished)
    size: int = 0


_EXIT_STATUS = re.compile(r"returned non-zero exit status (-?\d+)")


def _as_signal_status(code: int | None) -> int | None:
    """Exit statuses in every spelling as Python's: a shell's 128+N (137, 139) is -N, killed by signal N."""
    if code is not None and 128 < code <= 128 + 31:
        return -(code - 128)
    return code


def _int(s: str | None) -> int | None:
    try:
        return int(s) if s is not None else None
    except ValueError:
        return None


def exception_class(exc: str, msg: str) -> str | None:
    """The failure class an exception line stands for, or None when it reports another process's death."""
    if _CONSEQUENCE_EXC.search(exc) or _CONSEQUENCE_MSG.search(msg or ""):
        return None
    if _UNEXPLAINED_MSG.search(msg or ""):
        return "unknown"
    if exc.startswith("ray.") and exc.endswith("OutOfMemoryError"):
        return "host_oom"  # ray.exceptions.OutOfMemoryError: the node's RAM, Ray's memory monitor killed the worker
    if exc.endswith("OutOfMemoryError"):
        return "cuda_oom"
    if exc.rsplit(".", 1)[-1] == "MemoryError":
        return "host_oom"
    for rx, cls in _EXC_MESSAGE_CLASSES:
        if rx.search(msg or ""):
            return cls
    return _EXC_TYPE_CLASSES.get(exc.rsplit(".", 1)[-1], "python_exception")


def _gib(num: str, unit: str) -> float:
    return round(float(num) * _UNITS.get(unit, 1.0), 3)


def parse_oom(text: str, details: Sequence[Event] = ()) -> MemoryInfo:
    """The numbers in a CUDA OOM message (all three generations of the allocator's wording)."""
    req = total = free = alloc = unalloc = this = None
    gpu = None
    m = _OOM_OLD.search(text)
    if m:
        g = m.groups()
        req, gpu, total, alloc, free = _gib(g[0], g[1]), int(g[2]), _gib(g[3], g[4]), _gib(g[5], g[6]), _gib(g[7], g[8])
        reserved = _gib(g[11], g[12])
        unalloc = round(max(reserved - alloc, 0.0), 3)
    m = _OOM_NEW.search(text)
    if m:
        g = m.groups()
        req, gpu, total, free = _gib(g[0], g[1]), int(g[2]), _gib(g[3], g[4]), _gib(g[5], g[6])
    m = _OOM_ALLOC.search(text)
    if m:
        alloc, unalloc = _gib(m[1], m[2]), _gib(m[3], m[4])
    m = _OOM_THIS.search(text)
    if m:
        this = _gib(m[1], m[2])
    others = tuple((int(p), _gib(n, u)) for p, n, u in _OOM_PROC.findall(text))
    for d in details:
        key, val = d.data.get("key"), _gib(d.data["num"], d.data["unit"])
        if key == "Requested":
            req = val
        elif key == "Device limit":
            total = val
        elif key and key.startswith("Free"):
            free = val
        elif key == "Currently allocated":
            alloc = val
    if gpu is None:
        g2 = _OOM_GPU.search(text)
        gpu = int(g2[1]) if g2 else None
    foreign = None
    if this is not None:
        foreign = bool(others)
    elif len(others) > 1:
        foreign = True
    elif len(others) == 1 and total is not None and free is not None:
        # in a container torch cannot match its own pid and lists itself as "Process N": that process is the
        # one using (almost) everything in use on the GPU
        foreign = others[0][1] < 0.8 * (total - free)
    frag = None
    if unalloc is not None and req is not None:
        frag = unalloc >= req
    return MemoryInfo(gpu, req, total, free, alloc, unalloc, this, others, foreign, frag)


def _parse_command(text: str) -> list[str] | None:
    m = re.search(r"Command '?(\[.*\])'? returned", text)
    if m:
        try:
            v = ast.literal_eval(m[1])
            return [str(x) for x in v] if isinstance(v, list) else None
        except (ValueError, SyntaxError):
            return None
    try:
        return shlex.split(text, comments=False)
    except ValueError:
        return text.split()


_CONFIG_EXT = (".yaml", ".yml", ".json")
_VALUE_OPTS = {"--deepspeed", "--deepspeed_config", "--config_file", "--log_dir", "--rdzv_endpoint", "--output_dir",
               "--hostfile", "--master_addr", "--rdzv_backend", "--rdzv_id", "--redirects", "--tee", "-r", "-t"}


def launch_facts(tokens: list[str]) -> dict[str, object]:
    """Config path, master port and process counts in a launch command."""
    out: dict[str, object] = {}
    skip = False
    for i, tok in enumerate(tokens):
        if skip:
            skip = False
            continue
        key, _, val = tok.partition("=")
        nxt = tokens[i + 1] if i + 1 < len(tokens) else None
        if key in ("--master_port", "--master-port", "MASTER_PORT", "--main_process_port"):
            v = val or (nxt if not val else None)
            if v and v.isdigit():
                out["master_port"] = int(v)
            skip = not val
            continue
        if key in ("--nproc_per_node", "--nproc-per-node", "--num_processes", "--num_gpus"):
            v = val or nxt
            if v and v.isdigit():
                out["nproc"] = int(v)
            skip = not val
            continue
        if key in ("--nnodes", "--num_machines", "--num_nodes"):
            v = (val or nxt or "").split(":")[-1]
            if v.isdigit():
                out["nnodes"] = int(v)
            skip = not val
            continue
        if key == "--rdzv_endpoint" or key == "--rdzv-endpoint":
            v = val or nxt or ""
            if v.rpartition(":")[2].isdigit():
                out["master_port"] = int(v.rpartition(":")[2])
            skip = not val
            continue
        if key in _VALUE_OPTS:
            skip = not val
            continue
        if "config" not in out and tok.endswith(_CONFIG_EXT) and not tok.startswith("-"):
            out["config"] = tok
    return out


_TEMPLATE = re.compile(r"0x[0-9a-fA-F]+|\d+")  # the numbers of a line: ranks, pids, thread and block indices, times


class _Retention:
    """Which events a file's state keeps: memory must not grow with a log that repeats a line (a per-step warning,
    a device assert from every CUDA thread, a NaN loss every step after divergence). Lines of one template (the same
    pattern, rank and text but for numbers) are a run while they recur within CLUSTER_GAP lines; of a run only the
    first, the last and one every CLUSTER_GAP lines are kept, so that the first occurrence, the clusters and the gaps
    the cause selection reads are those of the whole log. Structural events (deaths, tables, run parameters,
    states) are always kept."""

    def __init__(self, out: list[Event]) -> None:
        self.out = out
        self.runs: dict[tuple[str, int | None, str], list] = {}  # key -> [last kept line, previous event, kept?]
        self.repeats = 0

    def add(self, ev: Event) -> None:
        if ev.role not in REPEATABLE:
            self.out.append(ev)
            return
        key = (ev.pattern, ev.rank, _TEMPLATE.sub("0", ev.text))
        run = self.runs.get(key)
        if run is None:
            self.runs[key] = [ev.line, ev, True]
            self.out.append(ev)
            return
        last_kept, prev, prev_kept = run
        if ev.line - prev.line > CLUSTER_GAP:  # a new run: keep the end of the last one and this start
            if not prev_kept:
                self._insert(prev)
            self.out.append(ev)
            run[:] = [ev.line, ev, True]
            return
        if ev.line - last_kept > CLUSTER_GAP and not prev_kept:
            self._insert(prev)  # keep a point every CLUSTER_GAP lines: the gaps between kept events stay short
            run[0] = prev.line
        self.repeats += 1
        run[1], run[2] = ev, False

    def _insert(self, ev: Event) -> None:
        bisect.insort(self.out, ev, key=lambda e: e.line)
        self.repeats -= 1

    def close(self) -> None:
        for run in self.runs.values():
            if not run[2]:
                self._insert(run[1])  # the last of each run
                run[2] = True


def _analyze(evs: Iterable[Event], file: str) -> _FileState:
    st = _FileState(file)
    section = None
    entry: dict[str, str] | None = None
    table_entries: list[tuple[str | None, dict[str, str], Event]] = []
    keep = _Retention(st.events)
    pending_tb: list[Event] = []
    for ev in evs:
        keep.add(ev)
        role = ev.role
        # a training start after a SLURM step's task exit: that step (a helper run before training) is over, and
        # the training step that then started is the job's outcome
        new_step = ev.pattern in ("phase_training", "phase_training_start") and any(
            d.event is not None and d.event.pattern == "srun_task_exit" for d in st.deaths.values())
        if role == P.RUN_START or ev.pattern == "lf_dist_tasks" or new_step:
            if st.failure_seen or st.error_seen or st.deaths or st.closing or st.finished:
                # a new launch appended to the same file: the outcome is that of the last attempt
                st.failure_seen = st.error_seen = st.finished = False
                st.deaths, st.closing, st.finish_line = {}, {}, None
                table_entries.clear()
                pending_tb.clear()
                section, entry = None, None
                st.attempt_line = ev.line
            if role == P.RUN_START:
                continue
        if role == P.TRACEBACK:
            # a traceback is a failure once its exception line is known not to be exit-time teardown (or when the
            # excerpt ends before it)
            pending_tb.append(ev)
            continue
        if role == P.EXCEPTION and _teardown(ev):
            pending_tb.clear()
            continue
        if role == P.EXCEPTION:
            pending_tb.clear()
        if role == P.TABLE_SECTION:
            section = "root" if ev.pattern == "table_root" else "failures"
            st.failure_seen = True
        elif role == P.TABLE:
            f, v = ev.data["field"].rstrip(), ev.data["val"]
            if f == "time" or entry is None:
                entry = {}
                table_entries.append((section, entry, ev))
            entry[f] = v
        elif role == P.CLOSING:
            st.closing.setdefault(int(ev.data["pid"]), (ev.data["sig"], ev))
            st.failure_seen = True
        elif role == P.DEATH:
            st.failure_seen = True
            pid = _int(ev.data.get("pid"))
            code = _int(ev.data.get("code"))
            if "sigword" in ev.data:
                code = _SRUN_SIGNAL_WORDS.get(ev.data["sigword"])
            elif "sig" in ev.data and ev.pattern != "subprocess_signal":
                code = -_SIGNAL_NUMBERS.get(ev.data["sig"], 0) or None
            elif ev.pattern == "spawn_process_error":
                code = 1  # it raised: its traceback follows
            if ev.pattern == "subprocess_signal" and code is not None:
                code = -code  # a signal number: the exit status of a killed process is its negative
            code = _as_signal_status(code)
            d = _Death(pid, _int(ev.data.get("lr")), code, ev.line, file, ev.text, ev.time, host=ev.host,
                       signal=signal_name(code) if code is not None and code < 0 else None, event=ev)
            st.deaths.setdefault(pid if pid is not None else f"line{ev.line}", d)
        elif ev.pattern == "called_process" or (role == P.EXCEPTION and "CalledProcessError" in ev.data.get("exc", "")):
            # a wrapper's subprocess.run(check=True) names how its child ended: "returned non-zero exit status -11."
            m = _EXIT_STATUS.search(ev.text)
            code = _as_signal_status(_int(m[1])) if m else None
            if role == P.EXCEPTION:
                st.failure_seen = True
            if code is not None and code < 0:
                st.failure_seen = True
                st.deaths.setdefault(f"line{ev.line}", _Death(None, None, code, ev.line, file, ev.text, ev.time,
                                                              host=ev.host, signal=signal_name(code), event=ev))
        elif role == P.EXCEPTION and st.finish_line is not None:
            if exception_class(ev.data["exc"], ev.data.get("msg", "")) is not None:
                st.failure_seen = True
        elif role in (P.CAUSE, P.AGENT_SIGNAL, P.EXCEPTION):
            st.failure_seen = True
        elif role == P.ERROR_LEVEL or (role == P.WEAK and ev.cls != "nan_loss"):
            st.error_seen = True  # an error was reported; a clean finish later outweighs it
        elif role == P.FINISHED:
            # a clean finish: what this attempt printed before it did not stop it (a caught, logged traceback; a helper
            # step that failed before the training step); a failure after it still counts
            st.finished = True
            st.finish_line = ev.line
            st.failure_seen = False
            pending_tb.clear()
            st.deaths, st.closing = {}, {}
            table_entries.clear()
            section, entry = None, None
    keep.close()
    if pending_tb:
        st.failure_seen = True  # a traceback whose exception line the excerpt does not show
    for sec, e, ev in table_entries:
        code_m = re.match(r"(-?\d+)(?: \(pid: (\d+)\))?", e.get("exitcode", ""))
        rank_m = re.match(r"(\d+)(?: \(local_rank: (\d+)\))?", e.get("rank", ""))
        code = int(code_m[1]) if code_m else None
        pid = int(code_m[2]) if code_m and code_m[2] else None
        sig_m = re.search(r"\((SIG[A-Z]+)\)", e.get("exitcode", "") + " " + e.get("traceback", ""))
        key: int | str = pid if pid is not None else f"table{ev.line}"
        d = st.deaths.get(key)
        if d is None:
            d = _Death(pid, None, code, ev.line, file, f"exitcode  : {e.get('exitcode', '')}")
            st.deaths[key] = d
        if rank_m:
            d.rank = int(rank_m[1])
            if rank_m[2] is not None:
                d.local_rank = int(rank_m[2])
        d.host = d.host or e.get("host")
        d.exitcode = code if code is not None else d.exitcode
        if sig_m:
            d.signal = sig_m[1]
        elif code is not None and code < 0:
            d.signal = signal_name(code)
        t = P.TABLE_TIME.search(e.get("time", ""))
        if t:
            d.time = d.time or f"{t['m']}{t['d']} {t['hms']}"
        d.root_hint = d.root_hint or sec == "root"
    return st


# exit-time teardown, printed after a run finished: CPython's multiprocessing finalizers (synchronize.py _cleanup
# unlinking a semaphore already gone, util.py _exit_function, resource_tracker), atexit callbacks, __del__ methods and
# weakref finalizers ("Exception ignored in: <function X.__del__>"). Noise, not the outcome.
_TEARDOWN_FRAME = re.compile(r"multiprocessing/(?:synchronize|util|resource_tracker|queues|managers|popen_\w+)\.py|"
                             r"atexit|weakref\.py| in (?:__del__|_cleanup|_exit_function|_run_finalizers|"
                             r"_python_exit|__exit__)$")


# DeepSpeed's launcher kills its workers from `sigkill_handler` (deepspeed/launcher/launch.py, runner.py), on a signal
# from outside or after a worker failed: an exception raised there (a NameError of its own in some versions, the
# CalledProcessError of older ones) follows the stop it handles, it never is the cause
_STOP_HANDLER_FRAME = re.compile(r"launcher/\w+\.py:\d+ in sigkill_handler$")


def _dead_worker(msg: str) -> str:
    """Who died, in an `_UNEXPLAINED_MSG` message."""
    if "DataLoader" in msg:
        return "a DataLoader worker exited unexpectedly"
    if "subprocesses" in msg:
        return "a worker of datasets' map died"
    return "a worker process of a pool died"


def _teardown(ev: Event) -> bool:
    return bool(ev.frame and (_TEARDOWN_FRAME.search(ev.frame) or _STOP_HANDLER_FRAME.search(ev.frame)))


def _is_victim(d: _Death, st: _FileState) -> bool:
    if d.exitcode == -15 or d.signal == "SIGTERM":
        return True
    return d.pid is not None and d.pid in st.closing and st.closing[d.pid][1].line < d.line


def _causes(st: _FileState) -> tuple[list[_Cause], list[_Cause]]:
    """Originating-failure candidates in log order, and weak ones."""
    causes: list[_Cause] = []
    weak: list[_Cause] = []
    agent_signal_seen = False
    for ev in st.events:
        if ev.line < st.attempt_line:
            continue  # an earlier attempt appended to the same file
        if st.finish_line is not None and ev.line < st.finish_line and ev.cls != "nan_loss" and \
                ev.role in (P.CAUSE, P.WEAK, P.EXCEPTION, P.AGENT_SIGNAL, P.CLOSING):
            continue  # the run finished after it: it did not stop the run
        if ev.role == P.EXCEPTION and _teardown(ev):
            continue  # exit-time teardown (a multiprocessing finalizer, atexit, __del__), a launcher's stop: not a cause
        if ev.role == P.CAUSE and ev.cls:
            exc = msg = None
            m = P.PATTERNS_BY_NAME["exception"].regex.search(ev.text.split("]: ", 1)[-1].lstrip()) \
                if ("Error" in ev.text or "Exception" in ev.text) else None
            if m:
                exc, msg = m["exc"], m["msg"]
            causes.append(_Cause(ev.cls, ev.confidence, ev, exception=exc, message=msg or ev.text))
        elif ev.role == P.EXCEPTION and ev.data.get("inner") in _RAY_INNER:
            inner = ev.data["inner"]
            causes.append(_Cause(_RAY_INNER[inner], "medium", ev, exception=f"{ev.data['exc']}({inner})",
                                 message=ev.data.get("msg", ""),
                                 reason=f"Ray reports that an actor raised {inner}; its own traceback is not in the "
                                        f"log"))
        elif ev.role == P.EXCEPTION:
            exc, msg = ev.data["exc"], ev.data.get("msg", "")
            cls = exception_class(exc, msg)
            if cls == "unknown":
                causes.append(_Cause(cls, "low", ev, exception=exc, message=msg,
                                     reason=f"{_dead_worker(msg)} without a signal name: usually /dev/shm is too "
                                            "small or the host OOM killer struck; check `df -h /dev/shm` and `dmesg "
                                            "-T | grep -i 'killed process'`"))
            elif cls is not None:
                conf = "high" if cls != "python_exception" else "medium"
                causes.append(_Cause(cls, conf, ev, exception=exc, message=msg))
        elif ev.role == P.AGENT_SIGNAL:
            sig = signal_name(ev.data["sig"])
            agent_signal_seen = True
            if sig == "SIGHUP":
                causes.append(_Cause("sighup", "high", ev, signal=sig))
            elif sig in ("SIGTERM", "SIGINT", "SIGQUIT"):
                causes.append(_Cause("sigterm", "high", ev, signal=sig,
                                     reason=None if sig == "SIGTERM" else f"the agent received {sig}"))
        elif ev.role == P.CLOSING and ev.data["sig"] == "SIGHUP" and not agent_signal_seen:
            # the agent forwards the signal it received; SIGHUP is only ever forwarded, never chosen
            agent_signal_seen = True
            causes.append(_Cause("sighup", "medium", ev, signal="SIGHUP",
                                 reason="the agent forwarded SIGHUP to its workers; its own 'Received' line is not "
                                        "in the log"))
        elif ev.role == P.WEAK and ev.cls:
            weak.append(_Cause(ev.cls, ev.confidence, ev))
    for d in st.deaths.values():
        if _is_victim(d, st):
            continue
        ev = Event("death", P.DEATH, None, "low", d.file, d.line, d.text, d.rank, d.host, d.time,
                   progress=d.event.progress if d.event else None)
        if d.signal in _SIGNAL_DEATH_CLASS:
            cls, conf = _SIGNAL_DEATH_CLASS[d.signal]
            reason = None
            if cls == "host_oom":
                reason = ("bare SIGKILL, no OOM-killer line: confirm with `dmesg -T | grep -i 'killed process'` "
                          "(a scheduler or a time limit also sends SIGKILL)")
            causes.append(_Cause(cls, conf, ev, reason=reason, death=d, signal=d.signal))
        elif d.signal in ("SIGHUP",):
            causes.append(_Cause("sighup", "medium", ev, death=d, signal=d.signal))
        elif d.exitcode is not None and d.exitcode != 0:
            what = f"signal {d.signal}" if d.signal else f"exit code {d.exitcode}"
            reason = f"{_who(d)} died with {what}; its error is not in this log"
            if d.signal == "SIGABRT":
                reason += (" (SIGABRT is usually the NCCL watchdog taking the process down: look for that rank's "
                           "'Watchdog caught collective operation timeout' or 'NCCL error' lines)")
            causes.append(_Cause("unknown", "low", ev, death=d, signal=d.signal, reason=reason))
    causes.sort(key=lambda c: c.event.line)
    return causes, weak


def _who(d: _Death) -> str:
    if d.rank is not None:
        return f"rank {d.rank}"
    if d.local_rank is not None:
        return f"local rank {d.local_rank}"
    return f"pid {d.pid}"


def _root_death(st: _FileState) -> _Death | None:
    roots = [d for d in st.deaths.values() if not _is_victim(d, st) and d.exitcode not in (None, 0)]
    if not roots:
        return None
    roots.sort(key=lambda d: (not d.root_hint, d.time or "", d.line))
    return roots[0]


def _matches(c: _Cause, d: _Death) -> bool:
    r = c.event.rank
    if r is None:
        return True
    if d.rank is not None:
        return r == d.rank
    return d.local_rank is None or r == d.local_rank


def _pick(st: _FileState) -> _Cause | None:
    causes, weak = _causes(st)
    if not causes:
        if weak and (st.failed or all(w.cls == "nan_loss" for w in weak)):
            return _cuda_before_nccl(weak[0], [])
        return None
    root = _root_death(st)
    # an unexplained death ("DataLoader worker exited unexpectedly") is what the main process saw; the worker's own
    # message (a bus error, a segfault) says why, whether it was printed before or after
    chosen = causes[0]
    if chosen.event.time and root is None:
        # lines pasted or flushed out of order: the earliest stamped failure is the origin
        timed = [c for c in causes if c.event.time and c.death is None and c.cls != "unknown"]
        earliest = min(timed, key=lambda c: c.event.time, default=chosen)
        if earliest.event.time < chosen.event.time:
            chosen = earliest
    if chosen.cls == "unknown":
        chosen = next((c for c in causes if c.cls != "unknown" and abs(c.event.line - chosen.event.line) <= CLUSTER_GAP),
                      chosen)
    if root is not None:
        # the agent watched the exits: the first process to die is the root, whatever printed first
        before_root = [c for c in causes if c.death is None and c.event.line <= root.line]
        if root.event is not None and root.event.pattern == "spawn_process_error":
            # mp.spawn prints the failed process's traceback below its "-- Process N terminated" line
            before_root = [c for c in causes if c.death is None and 0 <= c.event.line - root.line <= CLUSTER_GAP]
        mine = [c for c in before_root if _matches(c, root)]
        if not mine and root.rank is None:
            # no table, so no global rank: "[rank6]" on node 1 is local rank 2 there; take what came first
            mine = before_root[:1]
        mine = mine or [c for c in causes if c.death is root]
        other_originating = [c for c in causes if c.death is None and c.cls in ("sighup", "sigterm")
                             and c.event.line < root.line]
        if other_originating:
            chosen = other_originating[0]
        elif mine:
            specific = _last_cluster([c for c in mine if c.death is None])
            chosen = specific[0] if specific else mine[0]
            if chosen.death is None and chosen.event.rank is not None and chosen.cls == "python_exception":
                chosen.confidence = "high"  # the agent's first exit and the exception name the same rank
            chosen.death = root
            if (chosen.cls, root.signal) in (("segfault", "SIGSEGV"), ("shm_bus_error", "SIGBUS")):
                chosen.confidence = "high"  # the message and the exit signal agree
        else:
            chosen = next((c for c in causes if c.death is root), causes[0])
    return _cuda_before_nccl(_timeout_before_nccl(chosen, causes), causes)


def _timeout_before_nccl(chosen: _Cause, causes: list[_Cause]) -> _Cause:
    """A collective that timed out is the root cause of the NCCL errors that follow it: once a watchdog aborts its
    communicator (or the timed-out rank dies), the other ranks' pending collectives fail with "NCCL error in: ...".
    The earliest timeout, in log order, wins over an NCCL error printed after it."""
    if chosen.cls != "nccl_error":
        return chosen
    timeouts = [c for c in causes if c.cls == "nccl_timeout" and c.event.line < chosen.event.line]
    if not timeouts:
        return chosen
    t = timeouts[0]
    t.note = (f"the NCCL error (line {chosen.event.line}) followed the collective timeout (line {t.event.line}): the "
              f"timeout is the root cause")
    if t.death is None and chosen.death is not None and (t.event.rank is None or t.event.rank == chosen.death.rank):
        t.death = chosen.death
    return t


def _cuda_before_nccl(chosen: _Cause, causes: list[_Cause]) -> _Cause:
    """A CUDA error is the root cause when NCCL is how it surfaced: an NCCL failure with a CUDA error of the same rank
    printed with it (NCCL's "unhandled cuda error", the watchdog rethrowing a CUDA error) is reported as that CUDA
    error; a CUDA error in the watchdog's own line says so in a note."""
    if chosen.cls == "cuda_error" and chosen.note is None and "watchdog" in chosen.event.text.lower():
        chosen.note = "the CUDA error surfaced through the NCCL watchdog; it is the root cause, not NCCL"
    if chosen.cls != "nccl_error":
        return chosen
    for c in causes:
        if c.cls in ("cuda_error", "cuda_oom") and abs(c.event.line - chosen.event.line) <= CLUSTER_GAP and \
                (c.event.rank is None or chosen.event.rank is None or c.event.rank == chosen.event.rank):
            c.death = c.death or chosen.death
            c.note = (f"the CUDA error ({c.event.pattern.replace('_', ' ')}, line {c.event.line}) is the root cause; "
                      f"the NCCL failure (line {chosen.event.line}) is how it surfaced")
            return c
    return chosen


CLUSTER_GAP = 300  # lines: a traceback and its chained tracebacks print together


def _last_cluster(causes: list[_Cause]) -> list[_Cause]:
    """The causes printed together just before the rank died. An exception the run survived (a caught, logged
    traceback hours earlier) is not why the rank died; its fatal traceback is the last one it printed, and the
    first exception of that chain is the origin."""
    if not causes:
        return causes
    start = len(causes) - 1
    while start > 0 and causes[start].event.line - causes[start - 1].event.line <= CLUSTER_GAP:
        start -= 1
    return causes[start:]


def _phase(st: _FileState, ev: Event) -> str | None:
    last = None
    for e in st.events:
        if e.line >= ev.line:
            break
        if e.role == P.PHASE and e.line >= st.attempt_line:
            last = e
    step = f"step {ev.progress[0]}/{ev.progress[1]}" if ev.progress else None
    if last is None:
        return step
    phase = last.cls
    if phase == "checkpoint save":
        # training went on after the save (HF names the step it saved: "checkpoint-4"; the bar before the failure says
        # 5/160): the failure is in a later training step, not in the save
        saved = _int(last.data.get("step")) if last.data else None
        if ev.line - last.line > 50 or (saved is not None and ev.progress and ev.progress[0] > saved):
            phase = "training"
    if phase == "training" and step:
        return f"training {step}"
    return phase


def _run_params(states: Sequence[_FileState]) -> RunParams:
    vals: dict[str, object] = {}
    cmd_text = None
    for st in states:
        for ev in st.events:
            if ev.role == P.EXCEPTION and ev.data.get("exc", "").endswith("CalledProcessError"):
                # the exception line names the command the wrapper ran: it fills what the log does not say otherwise
                name, d = "called_process_exc", {"cmd": ev.text}
            elif ev.role != P.RUN:
                continue
            else:
                name, d = ev.pattern, ev.data
            if name == "hf_micro_batch":
                vals["micro"] = int(d["v"])
            elif name == "hf_accumulation":
                vals["accum"] = int(d["v"])
            elif name == "hf_global_batch":
                vals["global"] = int(d["v"])
            elif name == "hf_total_steps":
                vals["steps"] = int(d["v"].replace(",", ""))
            elif name in ("lf_world_size", "ds_world_size"):
                vals["world"] = int(d["v"])
            elif name == "lf_dist_tasks":
                vals.setdefault("master_port", int(d["port"]))
            elif name in ("called_process", "launch_command", "called_process_exc"):
                raw = ev.text if name == "called_process" else d["cmd"]
                toks = _parse_command(raw)
                if not toks:
                    continue
                facts = launch_facts(toks)
                if not facts:
                    continue
                if name == "called_process" or cmd_text is None:
                    cmd_text = " ".join(toks)[:500]
                for k, v in facts.items():
                    if name == "called_process":
                        vals[k] = v
                    else:
                        vals.setdefault(k, v)
    world = vals.get("world")
    if world is None and "nproc" in vals:
        world = int(vals["nproc"]) * int(vals.get("nnodes", 1))  # type: ignore[arg-type]
    micro, accum, glob = vals.get("micro"), vals.get("accum"), vals.get("global")
    if world is None and micro and accum and glob and glob % (micro * accum) == 0:  # type: ignore[operator]
        world = glob // (micro * accum)  # type: ignore[operator]
    if glob is None and micro and accum and world:
        glob = micro * accum * world  # type: ignore[operator]
    return RunParams(vals.get("config"), vals.get("master_port"), world, micro, accum, glob,  # type: ignore[arg-type]
                     cmd_text, vals.get("steps"))  # type: ignore[arg-type]


def _cascade(st: _FileState, root_pid: int | None) -> list[CascadeEntry]:
    out: dict[int | str, CascadeEntry] = {}
    for key, d in st.deaths.items():
        if d.pid == root_pid and root_pid is not None:
            continue
        if _is_victim(d, st):
            sig = d.signal or (st.closing[d.pid][0] if d.pid in st.closing else None)
            out[key] = CascadeEntry(d.rank if d.rank is not None else d.local_rank, sig, d.exitcode, d.pid)
    for pid, (sig, _ev) in st.closing.items():
        if pid != root_pid and pid not in out:
            out[pid] = CascadeEntry(None, sig, None, pid)
    return sorted(out.values(), key=lambda c: (c.rank is None, c.rank if c.rank is not None else 0, c.pid or 0))


def _template(text: str) -> str:
    """A line with its numbers masked: ranks, pids, thread and block indices, times."""
    return _TEMPLATE.sub("N", strip_prefixes(text).body)[:300]


def _evidence(st: _FileState, chosen: _Cause) -> list[Evidence]:
    ev = chosen.event
    picked = [ev]
    templates = {_template(ev.text)}
    for e in st.events:
        if e is ev or len(picked) >= 6:
            continue
        same_class = e.cls == chosen.cls and e.role in (P.CAUSE, P.WEAK)
        if same_class and (e.rank is None or e.rank == ev.rank):
            t = _template(e.text)
            if t in templates:
                continue  # one message printed by every rank or every CUDA thread is one piece of evidence
            templates.add(t)
            picked.append(e)
        elif chosen.death is not None and e.line == chosen.death.line:
            picked.append(e)
    seen: set[int] = set()
    out = []
    for e in sorted(picked, key=lambda e: e.line):
        if e.line in seen:
            continue
        seen.add(e.line)
        out.append(Evidence(e.file, e.line, e.text[:500]))
    return out


def _upgrade_confidence(st: _FileState, chosen: _Cause) -> str:
    best = _CONF_RANK[chosen.confidence]
    for e in st.events:
        if e.cls == chosen.cls and e.role == P.CAUSE:
            best = max(best, _CONF_RANK.get(e.confidence, 1))
    return _CONF_NAME[best]


@dataclass(frozen=True)
class _FileResult:
    state: _FileState
    chosen: _Cause | None


def analyze_file(path: str, prefilter: Prefilter | None = None, extra: tuple[P.Pattern, ...] = (),
                 warnings: list[str] | None = None) -> _FileResult:
    stream, name = open_log(path)
    if extra:
        # the user's patterns are tried first and searched everywhere
        prefilter = default_prefilter(tuple(extra)) if prefilter is None else \
            prefilter.with_patterns(tuple(extra) + P.PATTERNS, len(extra))
    stats: dict[str, int] = {}
    try:
        refill: list = []  # the events layer copies the few lines it holds before the reader reuses its buffer
        st = _analyze(events(scan(stream, name, prefilter, stats=stats, before_refill=refill), name, extra, warnings,
                             before_refill=refill), name)
        st.size = stats.get("bytes", 0)
    finally:
        if name != "<stdin>":
            stream.close()
    return _FileResult(st, _pick(st))


def _time_key(r: _FileResult) -> str | None:
    if r.chosen is None:
        return None
    c = r.chosen
    if c.event.time:
        return c.event.time
    if c.death is not None and c.death.time:
        return c.death.time
    after = [e.time for e in r.state.events if e.time and e.line >= c.event.line]
    return after[0] if after else None


def diagnose(paths: Sequence[str], prefilter: Prefilter | None = None,
             extra: tuple[P.Pattern, ...] = ()) -> Diagnosis:
    """Diagnose one job from its log files (one per node, or one): the earliest originating failure wins."""
    warnings: list[str] = []
    d = _diagnose(paths, prefilter, extra, warnings)
    return replace(d, warnings=tuple(warnings)) if warnings else d


def _diagnose(paths: Sequence[str], prefilter: Prefilter | None, extra: tuple[P.Pattern, ...],
              warnings: list[str]) -> Diagnosis:
    results = [analyze_file(p, prefilter, extra, warnings) for p in paths]
    files = tuple(r.state.file for r in results)
    run = _run_params([r.state for r in results])
    with_cause = [r for r in results if r.chosen is not None]
    if not with_cause:
        failed = any(r.state.failed for r in results)
        if failed:
            if any(r.state.failure_seen for r in results):
                why = ("the log shows a failure but not its cause (the excerpt may be truncated); look for the first "
                       "traceback of the rank that exited first")
            else:
                why = ("lines of the log report an error (the evidence below), in words oomfix does not know: read "
                       "them, and the lines just above them; no config change until the cause is known")
            return Diagnosis("unknown", "low", why, RootCause(), run=run, files=files,
                             evidence=tuple(_failure_evidence(results)))
        finished = any(r.state.finished for r in results)
        reason = "training finished" if finished else "no failure markers in the log"
        if not any(r.state.size for r in results):
            reason = "the log is empty"
        return Diagnosis("none", "high" if finished else "medium", reason, RootCause(), run=run, files=files,
                         finished=finished)
    order = sorted(range(len(with_cause)),
                   key=lambda i: (_time_key(with_cause[i]) is None, _time_key(with_cause[i]) or "",
                                  _class_rank(with_cause[i].chosen), i))
    best = with_cause[order[0]]
    chosen = best.chosen
    assert chosen is not None
    st = best.state
    d = chosen.death
    ev = chosen.event
    rank = ev.rank if ev.rank is not None else (d.rank if d else None)
    local_rank = d.local_rank if d else None
    if rank is None and local_rank is None and d is None and ev.rank is not None:
        rank = ev.rank
    exitcode = d.exitcode if d else None
    sig = chosen.signal or (d.signal if d else None)
    message = chosen.message
    if chosen.cls in ("sighup", "sigterm") and d is None:
        message = ev.text
    root = RootCause(
        rank=rank, local_rank=local_rank, host=(d.host if d else None) or ev.host, exitcode=exitcode,
        signal=sig, exception=chosen.exception, message=(message or ev.text)[:1000], file=ev.file, line=ev.line,
        phase=_phase(st, ev), pid=d.pid if d else None, raised_at=ev.frame if chosen.exception else None)
    cascade: list[CascadeEntry] = []
    for r in results:
        cascade.extend(_cascade(r.state, d.pid if (d and r is best) else None))
    memory = None
    if chosen.cls == "cuda_oom":
        details = [e for e in st.events if e.role == P.OOM_DETAIL and 0 <= e.line - ev.line <= 12]
        memory = parse_oom(ev.text, details)
        if rank is None and memory.gpu is not None and local_rank is None:
            # torchrun's convention (torch.cuda.set_device(LOCAL_RANK)): the process that reports "GPU 7" with all
            # the node's GPUs visible is local rank 7
            root = replace(root, local_rank=memory.gpu)
    confidence = _upgrade_confidence(st, chosen)
    reason = chosen.reason if confidence != "high" else None
    if confidence != "high" and reason is None:
        reason = _default_reason(chosen)
    if chosen.note:
        reason = chosen.note if reason is None else f"{chosen.note}; {reason}"
    return Diagnosis(chosen.cls, confidence, reason, root, tuple(cascade), tuple(_evidence(st, chosen)), run, memory,
                     files=files)


def _class_rank(c: _Cause | None) -> int:
    # on equal times: a specific originating cause before a bare death or an outside stop
    if c is None:
        return 9
    if c.cls == "unknown":
        return 3
    if c.cls in ("sighup", "sigterm"):
        return 2
    return 1 if c.death is None else 2


_PATTERN_REASONS = {
    "shell_killed": "the shell reported 'Killed' (SIGKILL) and there is no OOM-killer line: confirm with "
                    "`dmesg -T | grep -i 'killed process'`",
    "dataloader_killed": "a DataLoader worker was SIGKILLed; the kernel OOM killer is the usual sender: confirm with "
                         "`dmesg -T | grep -i 'killed process'`",
}


def _default_reason(c: _Cause) -> str:
    if c.event.pattern in _PATTERN_REASONS:
        return _PATTERN_REASONS[c.event.pattern]
    if c.event.role == P.WEAK:
        return f"only indirect evidence ({c.event.pattern.replace('_', ' ')}); no direct failure message"
    if c.cls == "python_exception":
        return "the exception is in the log, but no launcher line confirms that its rank failed first"
    if c.event.role == P.DEATH and c.death is not None:
        return f"inferred from the exit status ({c.death.signal or c.death.exitcode}) alone"
    return "the failure message is in the log, but no exit status confirms which process it killed"


def _failure_evidence(results: Sequence[_FileResult]) -> list[Evidence]:
    out = []
    for r in results:
        for e in r.state.events:
            if e.role in (P.TRACEBACK, P.EXCEPTION, P.DEATH, P.CLOSING, P.TABLE_SECTION, P.ERROR_LEVEL, P.WEAK):
                out.append(Evidence(e.file, e.line, e.text[:500]))
                if len(out) >= 5:
                    return out
    return out
