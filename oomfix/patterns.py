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
RUN_START = "run_start"  # a launch begins: what came before it in the file belongs to an earlier attempt
ERROR_LEVEL = "error_level"  # a line that reports an error in words no specific pattern knows: never "none"


@dataclass(frozen=True)
class Pattern:
    name: str
    markers: tuple[bytes, ...]
    regex: re.Pattern[str]
    role: str
    cls: str | None = None
    confidence: str = "medium"
    levels: str = ""  # glog severities the line must carry ("EF"); the regex then runs on the whole line


def _p(name, markers, regex, role, cls=None, confidence="medium", flags=0, levels=""):
    return Pattern(name, tuple(markers), re.compile(regex, flags), role, cls, confidence, levels)


PATTERNS: tuple[Pattern, ...] = (
    # ================================================================================================================
    # torch elastic: the torchrun agent and its summary (torch/distributed/elastic/agent/server/api.py,
    # multiprocessing/api.py, multiprocessing/errors/__init__.py; wording stable 1.9-2.13, glog style from 2.4)
    # ================================================================================================================
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
       # (the local rank and pid are optional: a renderer that wraps lines, such as rich, may put them on the next)
       r"failed \(exitcode: (?P<code>-?\d+)\)(?: local_rank: (?P<lr>\d+) \(pid: (?P<pid>\d+)\))?", DEATH),
    # subprocess.CalledProcessError of a directly launched worker: "died with <Signals.SIGKILL: 9>."
    # (torch.distributed.launch < 1.9 names the worker in the command: '--local_rank=7')
    _p("subprocess_signal", [b"died with <Signals."],
       r"(?:--local_rank=(?P<lr>\d+).*)?died with <Signals\.(?P<sig>SIG[A-Z]+): (?P<code>\d+)>", DEATH),
    # deepspeed/launcher/launch.py sigkill_handler
    _p("deepspeed_exit", [b"exits with return code"],
       r"(?:--local_rank=(?P<lr>\d+).*)?exits with return code = (?P<code>-?\d+)", DEATH),
    # the same handler when the launcher itself got SIGINT/SIGTERM (sig_names = {2: "SIGINT", 15: "SIGTERM"}): printed
    # only when no worker had failed first, "Main process received SIGTERM, exiting" (forks in PaddleNLP, OpenFL ...)
    _p("deepspeed_launcher_signal", [b"Main process received"],
       r"Main process received (?P<sig>SIG[A-Z]+), exiting", AGENT_SIGNAL),
    # SLURM srun (src/srun/srun_job.c, step_launch.c): "srun: error: node01: task 3: Exited with exit code 1",
    # "srun: error: node01: task 3: Killed", "... task 0: Segmentation fault (core dumped)"
    _p("srun_task_exit", [b"srun: error:"],
       r"srun: error: (?P<host>[\w.\-]+): tasks? (?P<lr>\d+)(?:[-,\d]*): (?:Exited with exit code (?P<code>\d+)|"
       r"(?P<sigword>Killed|Terminated|Aborted|Bus error|Segmentation fault|Hangup))", DEATH),
    # torch/multiprocessing/spawn.py (mp.spawn, detectron2/fairseq launchers): "-- Process 1 terminated with the
    # following error:" then that process's traceback BELOW it; ProcessExitedException "process 0 terminated with exit
    # code 1" / "process 0 terminated with signal SIGKILL"
    _p("spawn_process_error", [b"terminated with the following error"],
       r"-- Process (?P<lr>\d+) terminated with the following error", DEATH),
    _p("spawn_process_exit", [b"terminated with exit code", b"terminated with signal"],
       r"[Pp]rocess (?P<lr>\d+) terminated with (?:exit code (?P<code>-?\d+)|signal (?P<sig>SIG[A-Z]+))", DEATH),
    _p("table_field", [b"time      :", b"host      :", b"rank      :", b"exitcode  :", b"error_file:",
                       b"traceback :"],
       # (?P<val>(?:.*\S)?): the value without its trailing blanks, found once (a lazy `.*?` before `\s*$` tried every
       # length: a 16 KB line of blanks took seconds)
       # torchrun's fields are padded to ten columns (torch/distributed/elastic/multiprocessing/errors/__init__.py,
       # _FAILURE_FORMAT_TEMPLATE), as the markers say: the regex says so too, so that its loosened form does not take
       # every "Process rank: 3" or "host: x" line of a log for a table row (issue 16). classify strips the padding.
       r"^\s*(?P<field>(?:time|host|rank) {6}|exitcode  |error_file|traceback ):\s?(?P<val>(?:.*\S)?)\s*$", TABLE),
    _p("table_root", [b"Root Cause"], r"Root Cause", TABLE_SECTION),
    _p("table_failures", [b"Failures:"], r"^\s*Failures:", TABLE_SECTION),

    # ================================================================================================================
    # host memory: the kernel OOM killer (mm/oom_kill.c), cgroups, SLURM's task/cgroup plugin, Kubernetes, Ray's
    # memory monitor, PyTorch's CPU allocator, the DataLoader's SIGCHLD handler
    # ================================================================================================================
    # mm/oom_kill.c: "Out of memory: Killed process 1234 (python)" (>= 5.x; "Kill process" before), and the memcg
    # variant "Memory cgroup out of memory: Killed process ..."
    _p("kernel_oom_killer", [b"of memory: Kill"],
       r"[Oo]ut of memory: Kill(?:ed)? process (?P<pid>\d+)", CAUSE, "host_oom", "high"),
    # slurmstepd (src/plugins/task/cgroup): "Detected 1 oom_kill event in StepId=...", older "oom-kill event(s)"
    _p("slurm_oom_kill", [b"oom_kill event", b"oom-kill event"],
       r"Detected (?P<n>\d+) oom[-_]kill events?|oom[-_]kill events? in StepId", CAUSE, "host_oom", "high"),
    _p("kernel_oom_kill_line", [b"oom-kill:"], r"oom-kill:.*task=(?P<task>[^,]+),pid=(?P<pid>\d+)",
       CAUSE, "host_oom", "high"),
    _p("k8s_oomkilled", [b"OOMKilled"], r"\bOOMKilled\b", CAUSE, "host_oom", "high"),
    # Ray's memory monitor (src/ray/raylet/node_manager.cc, python/ray/exceptions.py, ray >= 2.2):
    # "N Workers (tasks / actors) killed due to memory pressure (OOM)", "ray.exceptions.OutOfMemoryError: Task was
    # killed due to the node running low on memory", "... which exceeds the memory usage threshold of 0.95. Ray killed
    # this worker". Before the CUDA patterns: Ray's OutOfMemoryError is host RAM, not GPU memory.
    # (newest: "1 worker(s) were killed due to the node running low on memory ... Ray killed 1 worker(s)")
    _p("ray_oom", [b"memory pressure (OOM)", b"running low on memory", b"memory usage threshold",
                   b"ray.exceptions.OutOfMemoryError", b"Ray killed", b"where the task"],
       r"killed due to memory pressure \(OOM\)|running low on memory|exceeds the memory usage threshold|"
       r"ray\.exceptions\.OutOfMemoryError|Ray killed (?:this worker|\d+ worker)|"
       # the same message when a terminal or a log collector split it: its first line alone
       r"Memory on the node \(IP: [^)]*\) where the task", CAUSE, "host_oom", "high"),
    # SLURM: srun "srun: error: node01: task 0: Out Of Memory", slurmstepd "StepId=7.batch exceeded memory limit
    # (734003200 > 52428800), being killed"; the kernel's "python invoked oom-killer: gfp_mask=..."; kubelet "The node
    # had condition: [MemoryPressure]"
    _p("scheduler_oom", [b"Out Of Memory", b"exceeded memory limit", b"invoked oom-killer", b"[MemoryPressure]"],
       r"tasks? [\d\-,]+: Out Of Memory|exceeded memory limit \(\d+ > \d+\), being killed|invoked oom-killer|"
       r"had condition: \[MemoryPressure\]", CAUSE, "host_oom", "high"),
    # torch/utils/data/_utils/signal_handling.py: "DataLoader worker (pid 123) is killed by signal: Killed."
    # the DataLoader's SIGCHLD handler when a worker died of SIGTERM ("is killed by signal: Terminated."): the process
    # group was stopped from outside (scancel, kill, a k8s pod deletion). Weak: in a torchrun cascade it is a victim's
    # line, and the failing rank's own error wins.
    _p("dataloader_terminated", [b"killed by signal: Terminated"],
       r"DataLoader worker \(pid(?:\(s\))? [\d, ]+\) is killed by signal: Terminated", WEAK, "sigterm", "medium"),
    _p("dataloader_killed", [b"killed by signal: Killed"],
       r"DataLoader worker \(pid(?:\(s\))? (?P<pid>[\d, ]+)\) is killed by signal: Killed", CAUSE, "host_oom",
       "medium"),
    # c10/core/impl/alloc_cpu.cpp
    _p("cpu_alloc_failed", [b"DefaultCPUAllocator"], r"DefaultCPUAllocator: (?:can't allocate|not enough) memory",
       CAUSE, "host_oom", "high"),
    # ENOMEM from the kernel (fork of DataLoader workers, mmap of a dataset: "OSError: [Errno 12] Cannot allocate
    # memory") and libstdc++'s "terminate called after throwing an instance of 'std::bad_alloc'": host RAM
    _p("enomem", [b"Cannot allocate memory", b"std::bad_alloc"], r"Cannot allocate memory|std::bad_alloc", CAUSE,
       "host_oom", "medium"),
    # the shell's report of a SIGKILLed foreground job; often glued to a tqdm bar ("it/s]Killed")
    # ("bash: line 1: 1234 Killed   python train.py", "it/s]Killed")
    _p("shell_killed", [b"Killed"], r"(?:^|[\]\s])Killed(?:\s*$|\s{2,}\S)|\b\d+ Killed\s+\S", CAUSE, "host_oom", "low"),

    # ================================================================================================================
    # shared memory and native crashes: torch/csrc/DataLoader.cpp (the workers' own signal handlers),
    # torch/utils/data/_utils/signal_handling.py, torch/multiprocessing, the shell, CPython's faulthandler, glog
    # ================================================================================================================
    # torch/csrc/DataLoader.cpp SIGBUS handler: "ERROR: Unexpected bus error encountered in worker. This might be caused
    # by insufficient shared memory (shm)."
    _p("shm_bus_error", [b"bus error encountered", b"insufficient shared memory", b"out of shared memory"],
       r"bus error encountered in worker|insufficient shared memory|out of shared memory", CAUSE,
       "shm_bus_error", "high"),
    # (the line may end at "Bus" when a renderer such as rich wrapped the message at a word boundary)
    _p("dataloader_bus_error", [b"killed by signal: Bus"], r"killed by signal: Bus(?: error|\s*$)", CAUSE,
       "shm_bus_error", "high"),
    # torch's shared-memory tensors live in /dev/shm as /torch_<pid>_...: a full /dev/shm reports ENOSPC
    _p("shm_full", [b"unable to write to file </torch_", b"unable to allocate shared memory"],
       r"unable to write to file </torch_.*No space left on device|unable to allocate shared memory", CAUSE,
       "shm_bus_error", "high"),
    # torch/csrc/DataLoader.cpp SIGSEGV handler: "ERROR: Unexpected segmentation fault encountered in worker."
    # (matched on the squeezed text too: a progress bar can pad the middle of it, "segment          ation")
    _p("dataloader_segfault", [b"segmentation fault encountered", b"encountered in worker"],
       r"Unexpected segmentation fault encountered in worker", CAUSE, "segfault", "high"),
    # CPython faulthandler "Fatal Python error: Segmentation fault", the shell's "Segmentation fault (core dumped)",
    # the DataLoader's "killed by signal: Segmentation fault"
    _p("segfault", [b"Segmentation fault", b"segmentation fault"], r"[Ss]egmentation fault", CAUSE, "segfault",
       "medium"),
    # glog's failure signal handler (c10 built with glog, many C++ extensions): "*** SIGSEGV (@0x0) received by PID 1234"
    # (abseil's handler, Ray workers: "*** SIGSEGV received at time=1742365186 on cpu 33 ***")
    _p("glog_sigsegv", [b"*** SIGSEGV"], r"\*\*\* SIGSEGV (?:\(@0x[0-9a-f]+\) )?received", CAUSE, "segfault",
       "high"),
    # the shell's report of a SIGBUS'd foreground job
    _p("shell_bus_error", [b"Bus error"], r"(?:^|[\]\s])Bus error(?: \(core dumped\))?\s*$", CAUSE, "shm_bus_error",
       "medium"),

    # ================================================================================================================
    # CUDA memory: c10/cuda/CUDACachingAllocator.cpp (three generations of the message), THC (torch < 1.5:
    # "cuda runtime error (2) : out of memory"), cuBLAS, NCCL's own "Cuda failure 'out of memory'".
    # Before NCCL: NCCL's "Cuda failure 'out of memory'" is an OOM too.
    # ================================================================================================================
    _p("cuda_oom", [b"out of memory", b"OutOfMemoryError", b"CUBLAS_STATUS_ALLOC_FAILED", b"Failed to CUDA "],
       r"(?:CUDA|Cuda|cuda|HIP|XPU|MPS)\b[^.]{0,24}out of memory|(?<!\()OutOfMemoryError|CUBLAS_STATUS_ALLOC_FAILED|"
       r"allocator.{0,40}\(out of memory\)|Failed to CUDA (?:calloc|malloc) \d+ bytes", CAUSE, "cuda_oom", "high"),

    # ================================================================================================================
    # c10d ProcessGroupNCCL (torch/csrc/distributed/c10d/ProcessGroupNCCL.cpp): the watchdog and heartbeat monitor
    # ================================================================================================================
    # the watchdog's timeout: "Watchdog caught collective operation timeout: WorkNCCL(SeqNum=4, OpType=BROADCAST, ...)
    # ran for 1800010 milliseconds before timing out." (1.13+); torch 1.8-1.12: "Timeout at NCCL work"; the C++ frame
    # "Exception raised from checkTimeout at .../ProcessGroupNCCL.cpp" names the timeout check even when the message is
    # cut
    # blocking-wait mode: "Work WorkNCCL(...) timed out in blocking wait"; 2.6+: "Received a dump signal due to a
    # collective timeout from this local rank"
    _p("nccl_watchdog_timeout", [b"Watchdog caught collective", b"before timing out", b"Timeout at NCCL work",
                                 b"from checkTimeout at", b"timed out in blocking wait",
                                 b"due to a collective timeout"],
       r"Watchdog caught collective|ran for \d+ milliseconds before timing out|Timeout at NCCL work|"
       r"Exception raised from checkTimeout at|timed out in blocking wait|dump signal due to a collective timeout",
       CAUSE, "nccl_timeout", "high"),
    # the heartbeat monitor (2.3+): the watchdog itself hung in a CUDA/NCCL call: "ProcessGroupNCCL's watchdog got
    # stuck for 480 seconds without making progress", 2.3 "Heartbeat monitor timed out! Process will be terminated",
    # and the fatal line "Terminating the process after attempting to dump debug info, due to ProcessGroupNCCL
    # watchdog hang"
    _p("nccl_heartbeat", [b"watchdog got stuck", b"Heartbeat monitor timed out", b"watchdog hang"],
       r"watchdog got stuck for \d+|Heartbeat monitor timed out|watchdog hang", CAUSE, "nccl_timeout", "high"),

    # ================================================================================================================
    # CUDA runtime errors, not capacity (c10/cuda/CUDAException.h C10_CUDA_CHECK: "CUDA error: <cudaGetErrorString>",
    # raised as torch.AcceleratorError since 2.8, RuntimeError before; THC (< 1.5): "cuda runtime error (N) : msg";
    # device-side asserts printed by every failing CUDA thread from a .cu file; cuBLAS/cuDNN status codes; the NVIDIA
    # kernel driver's Xid lines). Before the generic NCCL patterns: a CUDA error that surfaces through the NCCL
    # watchdog ("watchdog thread terminated with exception: CUDA error: ...") is the CUDA error.
    # ================================================================================================================
    _p("cuda_error", [b"CUDA error", b"HIP error", b"device-side assert", b"illegal memory access", b"CUBLAS_STATUS",
                      b"CUDNN_STATUS", b"cuDNN error", b"CuDNN error", b"cuda runtime error", b"misaligned address",
                      b"unspecified launch failure", b"uncorrectable ECC", b"illegal instruction was encountered"],
       r"(?:CUDA|HIP) error: (?!out of memory)|device-side assert|illegal memory access|CUBLAS_STATUS_(?!ALLOC)|"
       r"CUDNN_STATUS|[Cc]u[Dd][Nn][Nn] error|cuda runtime error \(\d+\)|misaligned address|"
       r"unspecified launch failure|uncorrectable ECC|illegal instruction was encountered", CAUSE, "cuda_error",
       "high"),
    # aten/src/ATen/native/cuda/*.cu: "Indexing.cu:1292: indexSelectLargeIndex: block: [682,0,0], thread: [54,0,0]
    # Assertion `srcIndex < srcSelectDimSize` failed." (printf from device code: one line per failing thread)
    _p("cuda_device_assert", [b".cu:", b".cuh:"],
       r"\.cuh?:\d+: (?:.*Assertion .* failed|.*block: \[\d+,\d+,\d+\], thread: \[\d+,\d+,\d+\] Assertion)", CAUSE,
       "cuda_error", "high"),
    # NVIDIA driver (dmesg): "NVRM: Xid (PCI:0000:3b:00): 79, pid=..., GPU has fallen off the bus."; 48/63/64/94/95 are
    # ECC / row-remapping errors, 13/31/43 are application faults
    _p("nvidia_xid", [b"NVRM: Xid", b"fallen off the bus"], r"NVRM: Xid|GPU has fallen off the bus", CAUSE,
       "cuda_error", "high"),
    # c10/cuda/CUDAException: the hint printed under every asynchronous CUDA error
    _p("cuda_async_hint", [b"CUDA kernel errors might be asynchronously reported"],
       r"CUDA kernel errors might be asynchronously reported", WEAK, "cuda_error", "medium"),

    # ================================================================================================================
    # NCCL itself (nccl/src/include/debug.h WARN lines, transport/net_ib.cc, misc/socket.cc) and c10d's NCCL errors
    # ================================================================================================================
    # torch 1.0-1.1 said "NCCL Error 2: unhandled system error"; c10d: "NCCL error in: .../ProcessGroupNCCL.cpp:NNN,
    # unhandled system error (run with NCCL_DEBUG=INFO for details), NCCL version 2.x"; ncclResult_t names
    _p("nccl_error", [b"NCCL error", b"NCCL Error", b"ncclInternalError", b"ncclRemoteError", b"ncclSystemError",
                      b"ncclUnhandledCudaError", b"ncclInvalidUsage", b"unhandled system error", b"unhandled cuda error",
                      b"remote process exiting prematurely"],
       r"NCCL [Ee]rror|nccl(?:Internal|Remote|System|UnhandledCuda)Error|ncclInvalidUsage|"
       r"unhandled (?:system|cuda) error|remote process exiting prematurely",
       CAUSE, "nccl_error", "high"),
    # net_ib.cc: "NET/IB : Got completion from peer 10.0.0.2<54862> with status=12 opcode=0 ..." (2.12+; "with error
    # 12" before): an InfiniBand work completion failed (12 = retry exceeded: link or peer gone)
    # (2.29+: "status=%s(%d)"); async IB events: "NET/IB : mlx5_0:1 Got async event : ...", "Got async error event"
    _p("nccl_ib_completion", [b"Got completion from peer", b"Got async", b"async fatal event"],
       r"Got completion from peer \S+ with (?:status=|error )(?P<status>\w+)|NET/IB ?: .*async (?:error |fatal )?event",
       CAUSE, "nccl_error", "high"),
    # the watchdog's generic teardown, printed after a timeout or an error: "Some NCCL operations have failed or timed
    # out. ... we are taking the entire process down."; "Process group watchdog thread terminated with exception:"
    # 2.4-2.5 "Exception (either an error or timeout) detected by watchdog at work: N", 2.6+ "failure detected by
    # watchdog at work sequence id", "Terminating the process after attempting to dump debug info, due to collective
    # timeout or exception"
    _p("nccl_watchdog_teardown", [b"Some NCCL operations have failed", b"watchdog thread terminated with exception",
                                  b"detected by watchdog", b"Terminating the process after attempting to dump"],
       r"Some NCCL operations have failed|watchdog thread terminated with exception|detected by watchdog at work|"
       r"Terminating the process after attempting to dump", CAUSE, "nccl_error", "medium"),
    _p("nccl_warn", [b"NCCL WARN"], r"NCCL WARN (?P<msg>.*)", WEAK, "nccl_error", "low"),
    # a C++ frame of the watchdog thread: NCCL trouble, cause unknown until the message says more
    _p("nccl_watchdog_frame", [b"from ncclCommWatchdog"], r"Exception raised from ncclCommWatchdog", WEAK,
       "nccl_error", "low"),

    # ================================================================================================================
    # ports (c10d TCPStore / socket.cpp, gloo, torch elastic's static rendezvous)
    # ================================================================================================================
    # accelerate (commands/launch.py, utils/launch.py prepare_multi_gpu_env, 0.20+): "ConnectionError: Tried to launch
    # distributed communication on port `29500`, but another process is utilizing it."
    _p("accelerate_port_in_use", [b"another process is utilizing it"],
       r"Tried to launch distributed communication on port `?(?P<port>\d+)`?, but another process is utilizing it",
       CAUSE, "port_in_use", "high"),
    _p("port_in_use", [b"EADDRINUSE", b"ddress already in use", b"server socket has failed"],
       r"EADDRINUSE|[Aa]ddress already in use|server socket has failed to (?:listen|bind)", CAUSE,
       "port_in_use", "high"),
    # a traceback that ends while the agent creates the rendezvous TCPStore: the store could not bind or
    # connect; on the master node that is almost always a busy MASTER_PORT
    _p("tcpstore_rendezvous", [b"TCPStore("], r"_store = TCPStore\(", WEAK, "port_in_use", "low"),

    # ================================================================================================================
    # numerics: loss scalers (DeepSpeed runtime/fp16/loss_scaler.py + fused_optimizer.py, fairseq
    # optim/dynamic_loss_scaler.py, apex amp/scaler.py), torch autograd anomaly mode, clip_grad_norm_
    # (error_if_nonfinite), and the loss lines of HF Trainer, Lightning and custom loops
    # ================================================================================================================
    # HF Trainer's final metrics (trainer.py): the run finished; its 'train_loss' average is no new evidence
    _p("train_finished", [b"'train_runtime'"], r"'train_runtime'", FINISHED),
    _p("loss_scale_minimum", [b"loss scale already at minimum", b"Minimum loss scale reached"],
       r"loss scale already at minimum|Minimum loss scale reached", CAUSE, "nan_loss", "high"),
    # apex/DeepSpeed driving the dynamic loss scale to zero: "reducing loss scale to 0.0", "reducing to 0"
    _p("loss_scale_zero", [b"reducing loss scale to 0", b"reducing to 0"],
       r"reducing (?:loss scale )?to 0(?:\.0*)?(?:\s|$|,)", CAUSE, "nan_loss", "medium"),
    # torch/csrc/autograd/engine.cpp (anomaly mode): "Function 'MulBackward0' returned nan values in its 0th output."
    _p("anomaly_nan", [b"returned nan values", b"returned inf values"],
       r"returned (?:nan|inf) values in its \d+(?:st|nd|rd|th) output", CAUSE, "nan_loss", "high"),
    # torch/nn/utils/clip_grad.py (error_if_nonfinite=True)
    _p("nonfinite_grad_norm", [b"is non-finite, so it cannot be clipped"],
       r"is non-finite, so it cannot be clipped", CAUSE, "nan_loss", "high"),
    # a training loop's own abort: DETR/MAE/DINO lineage "Loss is nan, stopping training" (print + sys.exit(1)),
    # detectron2 engine/train_loop.py "Loss became infinite or NaN at iteration=N!", Lightning (<= 1.x
    # terminate_on_nan) "The loss returned in `training_step` is nan or inf" / "is tensor(nan", "Detected nan and/or
    # inf values in", Keras-style "Invalid loss, terminating training", Megatron "found NaN in local grad norm" /
    # "found NaN in local forward loss calculation" / rerun_state_machine "Unexpected result nan"
    _p("nan_abort", [b"stopping training", b"NaN loss detected", b"nan loss detected", b"non-finite loss",
                     b"Loss is NaN", b"Loss is nan", b"loss is nan", b"loss is NaN", b"Loss is inf", b"Loss is Inf",
                     b"Loss became infinite", b"returned in `training_step` is", b"Detected nan and/or inf",
                     b"Invalid loss, terminating", b"found NaN in local", b"found Inf in local",
                     b"Unexpected result nan"],
       r"(?i:loss is (?:nan|inf(?:inity)?)\b|(?:nan|inf|non-finite) loss (?:detected|encountered)|"
       r"detected (?:nan|inf|non-finite) loss|loss became (?:infinite|nan)|"
       r"returned in `training_step` is (?:nan|inf|tensor\((?:nan|inf|-inf))|detected nan and/or inf values|"
       r"invalid loss, terminating|found (?:nan|inf) in local|unexpected result nan)",
       CAUSE, "nan_loss", "high"),
    # the loss itself: HF/LF dicts "{'loss': nan, 'grad_norm': nan}", custom loops "loss = nan", "Loss: nan (nan)",
    # "train_loss=inf"; weak: a diverged loss is only the class when nothing else failed
    # (transformers 5 logs the values as strings: "'grad_norm': 'nan'"; Megatron "| grad norm: nan |")
    # fairseq's progress "gnorm=inf"
    _p("nan_loss", [b": nan", b"= nan", b"=nan", b"'nan'", b": NaN", b"= NaN", b": inf", b"= inf", b"=inf", b"'inf'",
                    b": Inf", b": -inf", b"=-inf", b": Infinity", b"is nan", b"is NaN", b"is inf", b"is Inf"],
       r"(?i:(?:\b|_)(?:loss|grad[_ ]norm|gnorm)['\"]?\s*(?:(?:[:=]|is)\s*)?['\"]?[-+]?(?:nan|inf(?:inity)?)\b)", WEAK,
       "nan_loss", "medium"),
    # a dynamic loss scale stuck at its floor: DeepSpeed (runtime/fp16/loss_scaler.py, min_loss_scale 1 by default)
    # "OVERFLOW! Rank 0 Skipping step. Attempted loss scale: 1, reducing to 1"; fairseq "overflow detected, setting
    # loss scale to: 0.000244140625"; apex "reducing loss scale to 1.52587890625e-05". One overflow is routine.
    _p("loss_scale_floor", [b"reducing to", b"setting loss scale to", b"reducing loss scale to"],
       r"Attempted loss scale: 1(?:\.0+)?, reducing to 1(?:\.0+)?\s*$|"
       r"(?:setting|reducing) loss scale to:? (?:0\.000\d*|0\.0*[1-9]?\d*e-\d+|\d(?:\.\d+)?e-0?(?:[4-9]|[1-9]\d))\b",
       WEAK, "nan_loss", "medium"),
    # torch.utils.tensorboard / tensorboardX: a warning, but a symptom of the same divergence
    _p("nan_in_tensor", [b"NaN or Inf found in input tensor"], r"NaN or Inf found in input tensor", WEAK, "nan_loss",
       "low"),

    # ================================================================================================================
    # stopped from outside: SLURM (slurmstepd), Kubernetes (kubelet eviction)
    # ================================================================================================================
    # slurmstepd: error: *** JOB 123 ON node01 CANCELLED AT 2024-01-01T00:00:00 DUE TO TIME LIMIT *** (or scancel)
    # (also "DUE TO PREEMPTION", "DUE TO JOB REQUEUE", "DUE TO NODE FAILURE, SEE SLURMCTLD LOG FOR DETAILS")
    # "DUE TO TASK FAILURE" is not a stop from outside: srun cancels the step because one of its tasks failed
    _p("slurm_cancelled", [b"CANCELLED AT"],
       # the reason: words separated by one space (a lazy `[A-Z ]+?` next to `[\s,]*` and `SEE [A-Z ]+` made a line of
       # blanks cubic)
       r"CANCELLED AT \S+(?! DUE TO TASK FAILURE)(?: DUE TO (?P<why>[A-Z]+(?: (?!SEE )[A-Z]+)*))?[\s,]*(?:SEE [A-Z ]+)?\*",
       CAUSE,
       "sigterm", "high"),
    _p("slurm_task_failure", [b"DUE TO TASK FAILURE"], r"CANCELLED AT \S+ DUE TO TASK FAILURE", ERROR_LEVEL),
    # IBM Spectrum LSF's job report (appended to the job's output): "TERM_MEMLIMIT: job killed after reaching LSF memory
    # usage limit." (host RAM), "TERM_RUNLIMIT: job killed after reaching LSF run time limit.", TERM_OWNER/ADMIN/
    # PREEMPT/REQUEUE_*/CPULIMIT (stopped from outside), "Exited with exit code 1." (the job's own exit status),
    # "Successfully completed." (exit 0)
    _p("lsf_memlimit", [b"TERM_MEMLIMIT", b"TERM_SWAP"], r"TERM_(?:MEMLIMIT|SWAP): job killed", CAUSE, "host_oom",
       "high"),
    _p("lsf_killed", [b"TERM_"], r"TERM_(?:RUNLIMIT|OWNER|ADMIN|PREEMPT|REQUEUE_\w+|CPULIMIT|FORCE_\w+|UNKNOWN): job "
       r"killed", CAUSE, "sigterm", "high"),
    _p("lsf_exit", [b"Exited with exit code"], r"^Exited with exit code (?P<code>\d+)\.\s*$", DEATH),
    _p("lsf_done", [b"Successfully completed."], r"^Successfully completed\.\s*$", FINISHED),
    # CPython itself when the script is missing: "python: can't open file '/x/main.py': [Errno 2] No such file or
    # directory" (Modules/main.c): a bad command line, like argparse's
    _p("python_cant_open", [b"can't open file"], r"^\S*python[\d.]*: can't open file '[^']*': \[Errno \d+\]", CAUSE,
       "python_exception", "high"),
    _p("k8s_memory_eviction", [b"low on resource: memory"], r"low on resource: memory", CAUSE, "host_oom", "high"),
    # submitit (submitit/core/job_environment.py): the SLURM signal handler logs "Caught signal SIGUSR2 on HOST: this
    # job is preempted." (or "timed-out"), then "Requeued job 123 (2 remaining timeouts)"; its SIGTERM handler logs
    # "Bypassing signal SIGTERM" (a preemption notice, the job stops soon after). An outside stop: resume, never edit.
    _p("submitit_preempted", [b"this job is preempted", b"this job is timed-out", b"Requeued job"],
       r"Caught signal (?P<sig>SIG[A-Z0-9]+) on \S+: this job is (?:preempted|timed-out)|Requeued job \S+", CAUSE,
       "sigterm", "high"),
    # (the SIGTERM it bypasses is SLURM's notice: alone, without the preemption line, it is a weaker sign)
    _p("submitit_bypass", [b"Bypassing signal"], r"Bypassing signal (?P<sig>SIG[A-Z0-9]+)", CAUSE, "sigterm",
       "medium"),
    # Kubernetes (kubelet eviction manager, pod status), cloud spot/preemptible reclaim (AWS "Spot Instance
    # interruption notice", GCE "Instance was preempted" / metadata "preempted": TRUE)
    _p("outside_reclaim", [b"Pod was evicted", b"The node was low on resource", b"pot Instance interruption",
                           b"pot instance interruption", b"Instance was preempted", b"instance was preempted"],
       r"Pod was evicted|The node was low on resource: (?!memory)|[Ss]pot [Ii]nstance [Ii]nterruption|"
       r"[Ii]nstance was preempted", CAUSE, "sigterm", "high"),

    # ================================================================================================================
    # argparse (Lib/argparse.py ArgumentParser.error): "train.py: error: unrecognized arguments: --foo", "... the
    # following arguments are required: --config", "argument --lr: invalid float value: 'x'": a bad command line
    # ================================================================================================================
    _p("argparse_error", [b": error: "],
       r"^[\w.\-/]+: error: (?:unrecognized arguments|the following arguments are required|argument \S+: |"
       r"ambiguous option|invalid choice)", CAUSE, "python_exception", "high"),

    # --- Python exceptions (class from exception_class) ----------------------------------------------
    _p("exception", [b"Error", b"Exception", b"Interrupt", b"StopIteration"],
       r"^(?P<exc>(?:[A-Za-z_]\w*\.)*(?:[A-Z]\w*(?:Error|Exception|Interrupt)|Exception|StopIteration))"
       # Ray's RayTaskError(X) names the exception X the actor raised (python/ray/exceptions.py as_instanceof_cause)
       r"(?:\((?P<inner>[A-Za-z_][\w.]*)\))?"
       r"(?::\s*(?P<msg>(?:.*\S)?))?\s*$", EXCEPTION),  # (the message without trailing blanks, found once: linear)

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
       # (a python token starts after a blank: a leftmost match starts there anyway, and a run of "=" or ":" is not
       # tried from each of its characters)
       r"(?<!\S)\S*python\S*\s+(?:-u\s+)?-m\s+torch\.distributed\.(?:run|launch))\s.*)$", RUN),

    # --- phases -------------------------------------------------------------------------------------
    _p("phase_preprocess", [b"Running tokenizer on dataset", b"Converting format of dataset"],
       r"Running tokenizer on dataset|Converting format of dataset", PHASE, "preprocessing"),
    _p("phase_loading", [b"Loading checkpoint shards"], r"Loading checkpoint shards", PHASE, "model loading"),
    _p("phase_training", [b"***** Running training *****"], r"\*+ Running training \*+", PHASE, "training"),
    # detectron2's start of training (engine/train_loop.py): "Starting training from iteration 0" (one state literal:
    # each costs the pure-Python engine a pass past the head)
    _p("phase_training_start", [b"Starting training from iteration"], r"Starting training from iteration \d+", PHASE,
       "training"),
    _p("phase_eval", [b"***** Running Evaluation *****", b"***** Running evaluation *****"],
       r"\*+ Running [Ee]valuation \*+", PHASE, "evaluation"),
    _p("phase_eval_done", [b"'eval_loss'"], r"'eval_loss'", PHASE, "training"),
    _p("phase_save", [b"Saving model checkpoint"], r"Saving model checkpoint(?: to \S*?checkpoint-(?P<step>\d+))?", PHASE,
       "checkpoint save"),
    # HF Trainer (trainer.py _load_from_checkpoint) when it resumes: "Loading model from out/checkpoint-8." (a failure
    # after it, inside trainer.train -> _load_optimizer_and_scheduler, is a resume failure, not preprocessing)
    _p("phase_resume", [b"Loading model from"], r"Loading model from \S*checkpoint-\d+", PHASE, "checkpoint resume"),
    # a launch begins (printed once per launch, at its start): detectron2 engine/defaults.py default_setup "Rank of
    # current process: 0. World size: 4", detectron2/mmcv/mmdet "Environment info:" before their environment table.
    # Appended log files (detectron2's log.txt, `>> train.log`) hold several attempts: the last one is the outcome.
    _p("run_start_rank", [b"Rank of current process:"], r"Rank of current process: \d+\. World size: \d+", RUN_START),
    _p("run_start_env", [b"Environment info:"], r"\bEnvironment info:\s*$", RUN_START),
    # submitit (core/submission.py process_job): "Starting with JobEnvironment(job_id=..., ...)" at each (re)launch; a
    # requeued job appends to the same log file
    _p("run_start_submitit", [b"Starting with JobEnvironment("], r"Starting with JobEnvironment\(", RUN_START),
    # DeepSpeed's launcher (deepspeed/launcher/launch.py main) at each launch, once per node: "[launch.py:138:main]
    # WORLD INFO DICT: {'localhost': [0, 1]}"; `deepspeed ... >> train.log` appends launch after launch
    _p("run_start_deepspeed", [b"WORLD INFO DICT: "], r"launch\.py:\d+:main\] WORLD INFO DICT: ", RUN_START),
    # clean finishes: HF Trainer (trainer.py) "Training completed. Do not forget to share your model on
    # huggingface.co/models =)"; Lightning (trainer/trainer.py, 1.8+) "`Trainer.fit` stopped: `max_epochs=3` reached.";
    # Megatron-LM (training.py) "[after training is done] datetime: ..."
    # verl (trainer/ppo/ray_trainer.py fit) "Final validation metrics: {...}" after the last step
    # DeepSpeed's launcher (launch.py main) as each worker exits 0: "[launch.py:350:main] Process 29248 exits
    # successfully." (a worker that exits otherwise makes it kill the rest at once, sigkill_handler)
    _p("deepspeed_worker_done", [b"exits successfully."], r"launch\.py:\d+:main\] Process \d+ exits successfully\.",
       FINISHED),
    _p("train_completed", [b"Training completed. Do not forget", b"`Trainer.fit` stopped:", b"after training is done",
                           b"Final validation metrics:"],
       r"Training completed\. Do not forget to share|`Trainer\.fit` stopped: |\[after training is done\]|"
       r"Final validation metrics: ", FINISHED),
    _p("traceback_start", [b"Traceback (most recent call last)"], r"Traceback \(most recent call last\)", TRACEBACK),
    # a frame line: an excerpt that starts inside a traceback still shows that something failed
    _p("traceback_frame", [b'File "'], r'^\s*File "[^"]+", line \d+', TRACEBACK),

    # --- the numbers of a CUDA OOM in the allocator's multi-line format -------------------------------
    _p("oom_detail", [b"Currently allocated", b"Requested    ", b"Device limit", b"Free (according to CUDA)"],
       r"^(?P<key>Currently allocated|Requested|Device limit|Free \(according to CUDA\))\s*:\s*"
       r"(?P<num>[\d.]+)\s*(?P<unit>[KMGT]?i?B)", OOM_DETAIL),

    # --- structure and severity, when no wording above claimed the line ----------------------------------------------
    # an E/F glog line of c10d's NCCL code (ProcessGroupNCCL.cpp, NCCLUtils.cpp) is an NCCL failure even when its text
    # is cut off or worded in a way no pattern above knows
    _p("glog_nccl_failure", [b"ProcessGroupNCCL.", b"NCCLUtils."], r"ProcessGroupNCCL\.[ch]pp|NCCLUtils\.[ch]pp", WEAK,
       "nccl_error", "low", levels="EF"),
    # a line that says an error happened, in words no pattern above knows: the run failed, cause unknown. Lines that
    # carry a lower severity (INFO/WARNING/DEBUG, a glog I/W) are not errors whatever words they contain.
    # a line whose STRUCTURE says it reports an error, in words no pattern above knows: a level field (Python logging
    # "ERROR:root:", "- ERROR -", "[ERROR]", loguru "| ERROR |", detectron2 "d2.x ERROR:"), a program's "error:"/"fatal:"
    # prefix ("srun: error:", "error: ...", "Fatal Python error:"), glibc's "Assertion `x' failed.", a C++ terminate,
    # a status word (FAILED, ABORTED). Words in prose are not severity: compiler flags ("-Werror=return-type",
    # "-Wno-error=..."), metric names ("error_rate", "errors: 0"), a notifier's "An error occurred connecting to
    # Discord", a model's generated text. Lines that carry a lower level (INFO/WARNING/DEBUG, a glog I/W) are not errors.
    _p("error_level", [b"ERROR", b"CRITICAL", b"FATAL", b"FAILED", b"ABORT", b"rror:", b"atal:", b"Assertion",
                       b"terminate called", b"Fatal Python error", b"Aborted", b"core dumped"],
       r"^(?!.*(?:\b(?:INFO|WARN(?:ING)?|DEBUG|NOTICE)\b|[Ww]arning\b))(?:"
       # a level field, not a value ("log_level: ERROR", "'level': 'ERROR'", "LOGLEVEL=ERROR")
       r".*(?<![\w=\-'\"])(?<!level: )(?<!level )(?:ERROR|CRITICAL|FATAL|FAILED|ABORT(?:ED|ING)?)\b(?![=_'\"])"
       # a program's own prefix: "error: x", "srun: error: x", "file.cpp:12:3: fatal error: x", "fatal: x"
       r"|(?:[\w.\-/]+(?::\d+)*: )?(?:[Ee]rror|[Ff]atal)(?: error)?: "
       r"|Fatal Python error"
       # (the first "Assertion" decides: the text before it cannot hold one, so a line of them is not tried pairwise)
       r"|(?:[^A]|\BA|\bA(?!ssertion\b))*\bAssertion [`'\"].*\bfailed"
       r"|terminate called (?:after throwing|without an active exception)"
       # the shell's report of a job that died of a signal: "Aborted (core dumped)", "line 3: 123 Aborted  python x"
       r"|(?:.*\b\d+ )?Aborted(?:\s+\(core dumped\))?(?:\s*$|\s{2,}\S)|.*\(core dumped\))", ERROR_LEVEL),
    # Ray's raylet when a worker process dies (src/ray/raylet/node_manager.cc): "A worker died or was killed while
    # executing a task by an unexpected system error. ... Worker exit type: SYSTEM_ERROR ... There are some potential
    # root causes. (1) ... OOM killer ... (2) ray stop --force ... (3) ... SIGSEGV": a failure whose cause Ray itself
    # only lists as possibilities, so the class stays unknown (never a memory class on this line alone)
    _p("ray_worker_died", [b"A worker died or was killed"], r"A worker died or was killed while executing a task",
       ERROR_LEVEL),
    # Hydra's report that the task function raised (hydra/_internal/utils.py, run_and_report / _run_hydra):
    # "Error executing job with overrides: [...]", printed before the traceback (or instead of it, with HYDRA_FULL_ERROR
    # unset and the frames cut)
    _p("hydra_job_error", [b"Error executing job with overrides"], r"Error executing job with overrides",
       ERROR_LEVEL),
    # a glog E/F line (c10, torch's Python logging in glog style) that says an error happened in words: the level
    # letter is the structure, the words say it is not routine
    _p("glog_error_words", [b"rror", b"ailed", b"bort"],
       r"\b(?:[Ee]rror|ERROR|[Ff]ailed|FAILED|[Aa]bort(?:ed|ing)?)\b", ERROR_LEVEL, levels="EF"),
)

MARKERS: tuple[bytes, ...] = tuple(sorted({m for p in PATTERNS for m in p.markers}))

# --- what the reader looks for, where ---------------------------------------------------------------------------
# The first HEAD_BYTES of a log (start-up: launch command, run parameters, preprocessing) are searched for every
# marker. Past the head, a log is gigabytes of progress bars: a pattern that reports a failure still counts through
# every marker it has (pyscan._plan: a failure is found wherever it is), while run-parameter patterns (the HF block,
# the OOM's numbers) count only through markers that contain one of the ANCHORS below, or in the lines that FOLLOW a
# trigger: the HF Trainer block after "***** Running training", the summary table after ChildFailedError, the
# allocator's numbers after a CUDA OOM. State lines (phases) are looked for around the candidates (reader.scan).
HEAD_BYTES = 4 << 20
# The pure-Python engine searches only the anchors everywhere past the head (the other literals in a window above a
# failure's end, pyscan.Prefilter.find), and each anchor is a bytes.find pass, so the list is short: "rror" also finds
# "Fatal Python error: Segmentation fault", SLURM's "error: Detected 1 oom_kill event" and the "DistNetworkError" of
# a busy port; "xit" finds "exitcode", "exits with return code" and DeepSpeed's "loss scale ... Exiting run".
# Memory wordings are anchored on " memory"/"memory " and two spellings rather than "emory", which every DeepSpeed
# see_memory_usage line (printed each step) contains.
ANCHORS: tuple[bytes, ...] = (
    b"rror", b"ignal", b" memory", b"memory ", b"Of Memory", b"MemoryPressure", b"xit", b"Kill",
    b"***** Running training", b"Watchdog", b"Segmentation", b"Traceback", b"CANCELLED", b": nan", b"ception",
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
# (linear: a count starts after a non-digit, and the bracket is searched only so far, a line of digits or of "1/1 ["
# took seconds)
TQDM_PREFIX = re.compile(r"^.*?(?<!\d)\d+/\d+ \[[^\]]{0,1000}?(?:it/s|s/it|\?it/s)\](?=\S)")
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
# Wrappers that stack BEFORE the rank prefix, stripped in a loop by events.strip_prefixes (any order, any number):
# - Ray's log monitor (ray/_private/log_monitor.py, ray/_private/utils.py): "(WorkerDict pid=48213, ip=10.1.2.3) ",
#   "(raylet) ", "(TaskRunner pid=1, ip=...) ", "(pid=123) ", "(autoscaler +2m) "; its de-duplicator appends
#   " [repeated 7x across cluster]".
# - wall-clock stamps that loggers and `ts`/terminal tools put first: "18:11:06.680 ", "[18:11:06] ",
#   "2024-05-01 18:11:06,680 ", "2024-05-01T18:11:06.680Z ", "[2024-05-01 18:11:06] " (also kept as the line's time)
# - markdown from pasted logs: "> " quotes, "**" bold, a list "- " is NOT stripped (it is also YAML/diff text)
RAY_PREFIX = re.compile(r"^\((?:[A-Za-z_][\w.\-]*(?: pid=\d+)?(?:, ip=[\w.:\-]+)?|pid=\d+(?:, ip=[\w.:\-]+)?|"
                        r"autoscaler[^)]*)\)\s?")
RAY_REPEATED = re.compile(r"(?<!\s)\s*\[repeated \d+x across cluster\](?: \(Ray deduplicates[^)]*\))?\s*$")
CLOCK_PREFIX = re.compile(
    r"^\[?(?:(?P<y>\d{4})-(?P<mo>\d\d)-(?P<d>\d\d)[ T_])?(?P<hms>\d\d:\d\d:\d\d)(?:[.,](?P<f>\d+))?"
    r"(?:Z|[+-]\d\d:?\d\d)?\]?(?:\s+|(?=\[))")
# `rich` (Console, Panel, RichHandler, rich.traceback): box-drawing edges around a line ("│ text   │", a title in a
# border "╭──── Traceback (most recent call last) ────╮"), stripped so that the text inside reads like plain output
RICH_BOX_CHARS = "│┃║╭╰╮╯├┤┝┥┠┨┣┫╞╡─━═"
RICH_LEAD = re.compile(r"^\s*[│┃║╭╰├┝┠┣╞][─━═]*\s?")
# a box's right edge, and the rule characters and blanks before it (events._rich_trail strips it in linear time:
# the regex form `\s*[─━═]*[│...]\s*$`, tried at every start, is quadratic on a long run of blanks or rules)
RICH_RIGHT_EDGE = "│┃║╮╯┤┥┨┫╡"
RICH_RULE = "─━═"
MARKDOWN_PREFIX = re.compile(r"^(?:>\s?)+|^\*\*(?!\*)|^`+(?!`)")
# glog, as c10 (c10/util/Logging.cpp) and torch's Python logging in glog style print it, with or without brackets,
# pid and date: "E1127 19:02:18.114000 11226 api.py:1002] ", "[E429 13:55:49.384372190 ProcessGroupNCCL.cpp:1743] ",
# torch < 2.2: "[E ProcessGroupNCCL.cpp:475] ". The severity letter and the source file are structure: an E/F line
# of ProcessGroupNCCL.cpp is an NCCL failure whatever its (possibly cut) text says.
GLOG_ANY = re.compile(r"^\[?(?P<lvl>[IWEF])(?:(?P<md>\d{3,4}) (?P<hms>\d\d:\d\d:\d\d(?:\.\d+)?)(?: +\d+)? +| )"
                      r"(?P<src>[^\]\s]+?)(?::\d+)?\]\s?")
# NCCL's own prefix: "node-0:2874:7128 [3] NCCL INFO ..." (host:pid:tid [cudaDev])
NCCL_PREFIX = re.compile(r"^\s*(?P<host>[\w.\-]+):(?P<pid>\d+):(?P<tid>\d+) \[(?P<dev>\d+)\] ")
# c10d's log prefix (ProcessGroupNCCL createLogPrefix): "[Rank 3]" (<= 2.2), "[PG 0 Rank 3]" (2.3-2.4),
# "[PG 0 (default_pg) Rank 1]" (2.5), "[PG ID 0 PG GUID 0(default_pg) Rank 3]" (2.6+)
RANK_IN_TEXT = re.compile(r"\[(?:PG (?:ID )?\d+(?: PG GUID \d+)?(?: ?\([^)]*\))? )?Rank (?P<rank>\d+)\]")
DS_TIME = re.compile(r"^\[(?:\w+\|)?\d{4}-(?P<m>\d\d)-(?P<d>\d\d)[ _T](?P<hms>\d\d:\d\d:\d\d)(?:[,.](?P<f>\d+))?")
TABLE_TIME = re.compile(r"\d{4}-(?P<m>\d\d)-(?P<d>\d\d)_(?P<hms>\d\d:\d\d:\d\d)")
# Linear: the blanks before the bar stay on its line and are one run (adjacent `\s*` that also match newlines made
# 2,000 blank lines before an error cost 20 s, issue 23).
# a bar with no description ("Loading checkpoint shards: 8/8 ..." is not a training step): HF Trainer's
PROGRESS = re.compile(rb"(?:^|[\r\n])[ \t]*(?:\x1b\[[\d;]*m[ \t]*)?\d+%(?:\x1b\[[\d;]*m)?\|[^|\r\n]*\|[ \t]*(\d+)/(\d+) \[")
TRACEBACK_FRAME = re.compile(rb'File "([^"\n]+)", line (\d+), in ([^\n\r]+)')

PATTERNS_BY_NAME: dict[str, Pattern] = {p.name: p for p in PATTERNS}

USER_REGEX_TIMEOUT = 0.25  # seconds per line: a user pattern that backtracks catastrophically is cut off


class PatternTimeout(Exception):
    def __init__(self, pattern: "UserPattern") -> None:
        super().__init__(pattern.name)
        self.pattern = pattern


class _TimedRegex:
    """A user's regex, run by the `regex` module with a timeout per line and a total budget (oomfix/userregex.py),
    so that a catastrophic pattern cannot hang a run, one line at a time or summed over millions of lines."""

    def __init__(self, source: str, owner: "UserPattern | None" = None) -> None:
        import regex

        from oomfix.userregex import regex_problem

        problem = regex_problem(source)
        if problem:
            raise ValueError(problem)
        self.rx = regex.compile(source)
        self.owner = owner
        self.spent = 0.0  # seconds of matching since the last reset (rules.RuleSet.user_patterns resets it)

    def search(self, text: str):  # noqa: ANN201 - a regex match object
        import time

        from oomfix.userregex import TOTAL_BUDGET

        left = TOTAL_BUDGET - self.spent
        if left <= 0:
            raise PatternTimeout(self.owner)  # type: ignore[arg-type]
        t0 = time.monotonic()
        try:
            return self.rx.search(text, timeout=min(USER_REGEX_TIMEOUT, left))
        except TimeoutError:
            raise PatternTimeout(self.owner) from None  # type: ignore[arg-type]
        finally:
            self.spent += time.monotonic() - t0


@dataclass(frozen=True)
class UserPattern(Pattern):
    source: str = ""


def user_pattern(name: str, markers: list[str], source: str, cls: str, confidence: str, where: str) -> UserPattern:
    try:
        rx = _TimedRegex(source)
    except Exception as e:  # noqa: BLE001 - the regex module raises its own error type
        raise ValueError(f"{where}: pattern '{name}' does not compile: {e}") from None
    up = UserPattern(name, tuple(m.encode() for m in markers), rx, CAUSE, cls, confidence,  # type: ignore[arg-type]
                     source=where)
    rx.owner = up
    return up
