"""The log patterns oomfix knows, as data.

Each `Pattern` names the literal markers that must occur in a line for its regex to match (the reader's
prefilter looks only for markers, so the regexes run on a few lines in a million) and what a match means:
its `role` in the story of a dying job and, for causes, the failure class. Order matters: the first pattern
that matches a line wins, so specific wording comes before generic wording.

Formats are those of torch 1.x to 2.13 (torch/distributed/elastic/*, c10d, ProcessGroupNCCL.cpp,
c10/cuda/CUDACachingAllocator.cpp), DeepSpeed's launcher, HF Trainer, LLaMA-Factory, the kernel and SLURM.
"""
from __future__ import annotations

from dataclasses import dataclass

import re

# roles
CAUSE = "cause"  # an originating failure of `cls`
WEAK = "weak"  # counts only when the log shows a failure and nothing stronger explains it
AGENT_SIGNAL = "agent_signal"  # the torchrun agent itself received a signal
CLOSING = "closing"  # the agent stopping a survivor: a consequence
DEATH = "death"  # a launcher reporting a worker's exit code
TABLE = "table"  # a field of the ChildFailedError summary
TABLE_SECTION = "table_section"
EXCEPTION = "exception"  # a Python exception line; its class comes from `exception_class`
RUN = "run"  # run parameters
PHASE = "phase"
OOM_DETAIL = "oom_detail"
FINISHED = "finished"
TRACEBACK = "traceback"  # a traceback starts: something failed, even if the excerpt ends here


@dataclass(frozen=True)
class Pattern:
    name: str
    markers: tuple[bytes, ...]
    regex: re.Pattern[str]
    role: str
    cls: str | None = None
    confidence: str = "medium"


def _p(name, markers, regex, role, cls=None, confidence="medium", flags=0):
    return Pattern(name, tuple(markers), re.compile(regex, flags), role, cls, confidence)


PATTERNS: tuple[Pattern, ...] = (
    # --- the agent and its summary -------------------------------------------------------------------
    # agent/server/api.py: "Received {sig} death signal, shutting down workers" (Signals.SIGHUP or 1)
    _p("agent_received_signal", [b"death signal"],
       r"Received (?:Signals\.)?(?P<sig>SIG[A-Z]+|\d+) death signal", AGENT_SIGNAL),
    # multiprocessing/api.py _terminate_process_handler: the agent dying of its own signal handler
    _p("agent_signal_exception", [b"got signal"],
       r"SignalException: Process (?P<pid>\d+) got signal: (?P<sig>\d+)", AGENT_SIGNAL),
    _p("closing_signal", [b"closing signal"],
       r"Sending process (?P<pid>\d+) closing signal (?P<sig>SIG[A-Z]+)", CLOSING),
    _p("sigkill_escalation", [b"forcefully exiting via SIGKILL"],
       r"Unable to shutdown process (?P<pid>\d+) via (?P<sig>SIG[A-Z]+), forcefully exiting via SIGKILL", CLOSING),
    _p("worker_failed", [b"failed (exitcode"],
       r"failed \(exitcode: (?P<code>-?\d+)\) local_rank: (?P<lr>\d+) \(pid: (?P<pid>\d+)\)", DEATH),
    # subprocess.CalledProcessError of a directly launched worker: "died with <Signals.SIGKILL: 9>."
    _p("subprocess_signal", [b"died with <Signals."], r"died with <Signals\.(?P<sig>SIG[A-Z]+): (?P<code>\d+)>",
       DEATH),
    # deepspeed/launcher/launch.py sigkill_handler
    _p("deepspeed_exit", [b"exits with return code"],
       r"(?:--local_rank=(?P<lr>\d+).*)?exits with return code = (?P<code>-?\d+)", DEATH),
    _p("table_field", [b"time      :", b"host      :", b"rank      :", b"exitcode  :", b"error_file:",
                       b"traceback :"],
       r"^\s*(?P<field>time|host|rank|exitcode|error_file|traceback)\s*:\s?(?P<val>.*?)\s*$", TABLE),
    _p("table_root", [b"Root Cause"], r"Root Cause", TABLE_SECTION),
    _p("table_failures", [b"Failures:"], r"^\s*Failures:", TABLE_SECTION),

    # --- host memory ---------------------------------------------------------------------------------
    _p("kernel_oom_killer", [b"Out of memory: Kill"],
       r"Out of memory: Kill(?:ed)? process (?P<pid>\d+)", CAUSE, "host_oom", "high"),
    _p("slurm_oom_kill", [b"oom_kill event", b"oom-kill event"],
       r"Detected (?P<n>\d+) oom[-_]kill events?", CAUSE, "host_oom", "high"),
    _p("kernel_oom_kill_line", [b"oom-kill:"], r"oom-kill:.*task=(?P<task>[^,]+),pid=(?P<pid>\d+)",
       CAUSE, "host_oom", "high"),
    _p("k8s_oomkilled", [b"OOMKilled"], r"\bOOMKilled\b", CAUSE, "host_oom", "high"),
    _p("dataloader_killed", [b"killed by signal: Killed"],
       r"DataLoader worker \(pid(?:\(s\))? (?P<pid>[\d, ]+)\) is killed by signal: Killed", CAUSE, "host_oom",
       "medium"),
    _p("cpu_alloc_failed", [b"DefaultCPUAllocator"], r"DefaultCPUAllocator: (?:can't allocate|not enough) memory",
       CAUSE, "host_oom", "high"),
    # the shell's report of a SIGKILLed foreground job; often glued to a tqdm bar ("it/s]Killed")
    # ("bash: line 1: 1234 Killed   python train.py", "it/s]Killed")
    _p("shell_killed", [b"Killed"], r"(?:^|[\]\s])Killed(?:\s*$|\s{2,}\S)|\b\d+ Killed\s+\S", CAUSE, "host_oom", "low"),

    # --- shared memory, native crashes ---------------------------------------------------------------
    _p("shm_bus_error", [b"bus error encountered", b"insufficient shared memory", b"out of shared memory"],
       r"bus error encountered in worker|insufficient shared memory|out of shared memory", CAUSE,
       "shm_bus_error", "high"),
    _p("dataloader_bus_error", [b"killed by signal: Bus error"], r"killed by signal: Bus error", CAUSE,
       "shm_bus_error", "high"),
    # torch's shared-memory tensors live in /dev/shm as /torch_<pid>_...: a full /dev/shm reports ENOSPC
    _p("shm_full", [b"unable to write to file </torch_", b"unable to allocate shared memory"],
       r"unable to write to file </torch_.*No space left on device|unable to allocate shared memory", CAUSE,
       "shm_bus_error", "high"),
    _p("segfault", [b"Segmentation fault"], r"Segmentation fault", CAUSE, "segfault", "medium"),
    # the shell's report of a SIGBUS'd foreground job
    _p("shell_bus_error", [b"Bus error"], r"(?:^|[\]\s])Bus error(?: \(core dumped\))?\s*$", CAUSE, "shm_bus_error",
       "medium"),

    # --- CUDA memory (before NCCL: NCCL's own "Cuda failure 'out of memory'" is an OOM too) ---
    _p("cuda_oom", [b"out of memory", b"OutOfMemoryError", b"CUBLAS_STATUS_ALLOC_FAILED"],
       r"(?:CUDA|Cuda|HIP|XPU|MPS)\b[^.]{0,24}out of memory|OutOfMemoryError|CUBLAS_STATUS_ALLOC_FAILED|"
       r"allocator.{0,40}\(out of memory\)", CAUSE, "cuda_oom", "high"),
    # --- NCCL ---------------------------------------------------------------------------------------
    _p("nccl_watchdog_timeout", [b"Watchdog caught collective", b"before timing out", b"Timeout at NCCL work"],
       r"Watchdog caught collective operation timeout|ran for \d+ milliseconds before timing out|"
       r"Timeout at NCCL work", CAUSE, "nccl_timeout", "high"),
    # torch 1.0-1.1 said "NCCL Error 2: unhandled system error"
    _p("nccl_error", [b"NCCL error", b"NCCL Error", b"ncclInternalError", b"ncclRemoteError", b"ncclSystemError",
                      b"ncclUnhandledCudaError", b"ncclInvalidUsage", b"unhandled system error"],
       r"NCCL [Ee]rror|nccl(?:Internal|Remote|System|UnhandledCuda)Error|ncclInvalidUsage|unhandled system error",
       CAUSE, "nccl_error", "high"),
    _p("nccl_warn", [b"NCCL WARN"], r"NCCL WARN (?P<msg>.*)", WEAK, "nccl_error", "low"),

    # --- ports --------------------------------------------------------------------------------------
    _p("port_in_use", [b"EADDRINUSE", b"ddress already in use", b"server socket has failed"],
       r"EADDRINUSE|[Aa]ddress already in use|server socket has failed to (?:listen|bind)", CAUSE,
       "port_in_use", "high"),
    # a traceback that ends while the agent creates the rendezvous TCPStore: the store could not bind or
    # connect; on the master node that is almost always a busy MASTER_PORT
    _p("tcpstore_rendezvous", [b"TCPStore("], r"_store = TCPStore\(", WEAK, "port_in_use", "low"),

    # --- CUDA ---------------------------------------------------------------------------------------
    _p("cuda_error", [b"CUDA error", b"device-side assert", b"illegal memory access", b"CUBLAS_STATUS",
                      b"CUDNN_STATUS", b"cuDNN error"],
       r"CUDA error: (?!out of memory)|device-side assert|illegal memory access|CUBLAS_STATUS_(?!ALLOC)|"
       r"CUDNN_STATUS|cuDNN error", CAUSE, "cuda_error", "high"),

    # --- numerics -----------------------------------------------------------------------------------
    _p("loss_scale_minimum", [b"loss scale already at minimum", b"Minimum loss scale reached"],
       r"loss scale already at minimum|Minimum loss scale reached", CAUSE, "nan_loss", "high"),
    _p("nan_loss", [b": nan"], r"(?:'loss'|'grad_norm'|\bloss|\bgrad_norm)'?\s*:\s*nan\b", WEAK, "nan_loss",
       "medium"),

    # --- stopped from outside -----------------------------------------------------------------------
    # slurmstepd: error: *** JOB 123 ON node01 CANCELLED AT 2024-01-01T00:00:00 DUE TO TIME LIMIT *** (or scancel)
    _p("slurm_cancelled", [b"CANCELLED AT"],
       r"CANCELLED AT \S+(?: DUE TO (?P<why>[A-Z ]+?))?\s*\*", CAUSE, "sigterm", "high"),
    _p("k8s_memory_eviction", [b"low on resource: memory"], r"low on resource: memory", CAUSE, "host_oom", "high"),

    # --- Python exceptions (class from exception_class) ----------------------------------------------
    _p("exception", [b"Error", b"Exception", b"Interrupt", b"StopIteration"],
       r"^(?P<exc>(?:[A-Za-z_]\w*\.)*(?:[A-Z]\w*(?:Error|Exception|Interrupt)|Exception|StopIteration))"
       r"(?::\s*(?P<msg>.*?))?\s*$", EXCEPTION),

    # --- the run's parameters -----------------------------------------------------------------------
    _p("hf_micro_batch", [b"Instantaneous batch size per device"],
       r"Instantaneous batch size per device = (?P<v>\d+)", RUN),
    _p("hf_accumulation", [b"Gradient Accumulation steps"], r"Gradient Accumulation steps = (?P<v>\d+)", RUN),
    _p("hf_global_batch", [b"Total train batch size"],
       r"Total train batch size \(w\. parallel, distributed & accumulation\) = (?P<v>\d+)", RUN),
    _p("hf_total_steps", [b"Total optimization steps"], r"Total optimization steps = (?P<v>[\d,]+)", RUN),
    # LLaMA-Factory hparams/parser.py
    _p("lf_world_size", [b"world size:"], r"Process rank: (?P<rank>\d+), world size: (?P<v>\d+)", RUN),
    _p("ds_world_size", [b"dist_world_size"], r"dist_world_size=(?P<v>\d+)", RUN),
    # LLaMA-Factory cli.py when it spawns torchrun
    _p("lf_dist_tasks", [b"distributed tasks at"],
       r"Initializing (?:(?P<n>\d+) )?distributed tasks at: (?P<addr>[\w.\-\[\]:]+?):(?P<port>\d+)\b", RUN),
    _p("called_process", [b"CalledProcessError"],
       r"CalledProcessError: Command '?(?P<cmd>\[.*\])'? returned non-zero exit status (?P<code>-?\d+)", RUN),
    _p("launch_command", [b"torchrun ", b"llamafactory-cli ", b"torch.distributed.run", b"torch.distributed.launch",
                          b"accelerate launch", b"deepspeed "],
       r"(?:^|[\s+$>:=])(?P<cmd>(?:torchrun|llamafactory-cli|accelerate launch|deepspeed|"
       r"\S*python\S*\s+(?:-u\s+)?-m\s+torch\.distributed\.(?:run|launch))\s.*)$", RUN),

    # --- phases -------------------------------------------------------------------------------------
    _p("phase_preprocess", [b"Running tokenizer on dataset", b"Converting format of dataset"],
       r"Running tokenizer on dataset|Converting format of dataset", PHASE, "preprocessing"),
    _p("phase_loading", [b"Loading checkpoint shards"], r"Loading checkpoint shards", PHASE, "model loading"),
    _p("phase_training", [b"***** Running training *****"], r"\*+ Running training \*+", PHASE, "training"),
    _p("phase_eval", [b"***** Running Evaluation *****", b"***** Running evaluation *****"],
       r"\*+ Running [Ee]valuation \*+", PHASE, "evaluation"),
    _p("phase_eval_done", [b"'eval_loss'"], r"'eval_loss'", PHASE, "training"),
    _p("phase_save", [b"Saving model checkpoint"], r"Saving model checkpoint", PHASE, "checkpoint save"),
    _p("train_finished", [b"'train_runtime'"], r"'train_runtime'", FINISHED),
    _p("traceback_start", [b"Traceback (most recent call last)"], r"Traceback \(most recent call last\)", TRACEBACK),
    # a frame line: an excerpt that starts inside a traceback still shows that something failed
    _p("traceback_frame", [b'File "'], r'^\s*File "[^"]+", line \d+', TRACEBACK),

    # --- the numbers of a CUDA OOM in the allocator's multi-line format -------------------------------
    _p("oom_detail", [b"Currently allocated", b"Requested    ", b"Device limit", b"Free (according to CUDA)"],
       r"^(?P<key>Currently allocated|Requested|Device limit|Free \(according to CUDA\))\s*:\s*"
       r"(?P<num>[\d.]+)\s*(?P<unit>[KMGT]?i?B)", OOM_DETAIL),
)

MARKERS: tuple[bytes, ...] = tuple(sorted({m for p in PATTERNS for m in p.markers}))

# --- what the reader looks for, where ---------------------------------------------------------------------------
# The first HEAD_BYTES of a log (start-up: launch command, run parameters, preprocessing) are searched for every
# marker. Past the head, a log is gigabytes of progress bars, and only ANCHORS are searched: short literals that
# every failure marker contains ("rror" is in every *Error and "NCCL error"), so that a handful of passes replace
# ninety. A line an anchor finds is parsed with the full patterns, so a coarse anchor costs time, never accuracy.
# Markers that no anchor covers (run parameters, launch commands, NCCL WARN, traceback frames) only count in the
# head, or in the lines that FOLLOW a trigger: the HF Trainer block after "***** Running training", the summary
# table after ChildFailedError, the allocator's numbers after a CUDA OOM.
HEAD_BYTES = 4 << 20
# Each anchor is a bytes.find pass for the pure-Python engine, so the list is short: "rror" also finds
# "Fatal Python error: Segmentation fault", SLURM's "error: Detected 1 oom_kill event" and the "DistNetworkError" of
# a busy port; "xit" finds "exitcode", "exits with return code" and DeepSpeed's "loss scale ... Exiting run".
ANCHORS: tuple[bytes, ...] = (
    b"rror", b"ignal", b"emory", b"xit", b"Kill", b"*****", b"Saving model", b"_loss'", b"Watchdog",
    b"Segmentation", b"Traceback", b"CANCELLED", b": nan", b"ception",
)
FOLLOW: tuple[tuple[bytes, int], ...] = (
    (b"***** Running training", 14),
    (b"ChildFailedError", 600),  # the summary table: 8 lines per failed worker
    (b"OutOfMemoryError", 10),
    (b"out of memory", 10),
)

# --- line cleaning --------------------------------------------------------------------------------------
ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07]*\x07|\x1b[()][A-Za-z0-9]")
# a tqdm bar that another record got glued to: "... 3/6 [00:03<00:05,  1.00it/s][rank1]: Traceback"
TQDM_PREFIX = re.compile(r"^.*?\d+/\d+ \[[^\]]*(?:it/s|s/it|\?it/s)\](?=\S)")
# rank prefixes: torch >= 2.2 "[rank3]:", torchrun --tee "[default0]:", srun -l "0: ", pdsh "host: ", mpirun "[1,3]<stderr>:",
# "[host:2]:"; markdown quotes from pasted logs
PREFIX = re.compile(
    r"^(?:>\s?)?\s*(?:std(?:err|out):\s*)?(?:"
    r"\[(?:rank|default)(?P<rank>\d+)\]:\s?"
    r"|\[\d+,(?P<mpirank>\d+)\]<std(?:out|err)>:\s?"  # mpirun --tag-output
    r"|(?P<srun>\d{1,5}): "
    r"|\[(?P<h1>[\w.\-]+):(?P<hrank>\d+)\]:\s?"
    r"|(?P<host>[A-Za-z][\w.\-]*(?:\d|-)[\w.\-]*): (?=\S)"
    r")?"
)
# NCCL's own prefix: "node-0:2874:7128 [3] NCCL INFO ..." (host:pid:tid [cudaDev])
NCCL_PREFIX = re.compile(r"^\s*(?P<host>[\w.\-]+):(?P<pid>\d+):(?P<tid>\d+) \[(?P<dev>\d+)\] ")
RANK_IN_TEXT = re.compile(r"\[(?:PG \d+ )?Rank (?P<rank>\d+)\]")
GLOG = re.compile(r"^(?P<lvl>[IWEF])(?P<md>\d{4}) (?P<hms>\d\d:\d\d:\d\d(?:\.\d+)?) +\d+ (?P<src>[^\]]+)\] ")
DS_TIME = re.compile(r"^\[(?:\w+\|)?\d{4}-(?P<m>\d\d)-(?P<d>\d\d)[ _T](?P<hms>\d\d:\d\d:\d\d)(?:[,.](?P<f>\d+))?")
TABLE_TIME = re.compile(r"\d{4}-(?P<m>\d\d)-(?P<d>\d\d)_(?P<hms>\d\d:\d\d:\d\d)")
# a bar with no description ("Loading checkpoint shards: 8/8 ..." is not a training step): HF Trainer's
PROGRESS = re.compile(rb"(?:^|[\r\n])\s*(?:\x1b\[[\d;]*m)?\s*\d+%(?:\x1b\[[\d;]*m)?\|[^|\r\n]*\|\s*(\d+)/(\d+) \[")
TRACEBACK_FRAME = re.compile(rb'File "([^"\n]+)", line (\d+), in ([^\n\r]+)')

PATTERNS_BY_NAME: dict[str, Pattern] = {p.name: p for p in PATTERNS}

USER_REGEX_TIMEOUT = 0.25  # seconds per line: a user pattern that backtracks catastrophically is cut off


class PatternTimeout(Exception):
    def __init__(self, pattern: "UserPattern") -> None:
        super().__init__(pattern.name)
        self.pattern = pattern


class _TimedRegex:
    """A user's regex, run by the `regex` module with a timeout, so that a catastrophic pattern cannot hang a run."""

    def __init__(self, source: str, owner: "UserPattern | None" = None) -> None:
        import regex

        self.rx = regex.compile(source)
        self.owner = owner

    def search(self, text: str):  # noqa: ANN201 - a regex match object
        try:
            return self.rx.search(text, timeout=USER_REGEX_TIMEOUT)
        except TimeoutError:
            raise PatternTimeout(self.owner) from None  # type: ignore[arg-type]


@dataclass(frozen=True)
class UserPattern(Pattern):
    source: str = ""


def user_pattern(name: str, markers: list[str], source: str, cls: str, confidence: str, where: str) -> UserPattern:
    try:
        rx = _TimedRegex(source)
    except Exception as e:  # noqa: BLE001 - the regex module raises its own error type
        raise ValueError(f"{where}: pattern '{name}' does not compile: {e}") from None
    up = UserPattern(name, tuple(m.encode() for m in markers), rx, CAUSE, cls, confidence, where)  # type: ignore[arg-type]
    rx.owner = up
    return up
