"""Classifier cases in a few lines each: wordings of real logs beyond the fixtures."""
import pytest

from oomfix.classify import diagnose

AGENT_FAIL = ("E1127 10:00:00.000000 1 torch/distributed/elastic/multiprocessing/api.py:1002] failed (exitcode: {code}) "
              "local_rank: {lr} (pid: 77) of binary: python\n")

CASES = [
    # CONSTRUCTED from the producers' wording (ray src/ray/raylet/node_manager.cc; hydra/_internal/utils.py)
    ("Ray's raylet: a worker died, causes only listed (never a memory class)",
     "(raylet) A worker died or was killed while executing a task by an unexpected system error. To troubleshoot the "
     "problem, check the logs for the dead worker. Worker exit type: SYSTEM_ERROR Worker exit detail: Worker "
     "unexpectedly exits with a connection error code 2. End of file. There are some potential root causes. (1) The "
     "process is killed by SIGKILL by OOM killer due to high memory usage. (2) ray stop --force is called. (3) The "
     "worker is crashed unexpectedly due to SIGSEGV or other unexpected errors.\n", "unknown", "low"),
    ("Hydra's report that the task raised, its traceback cut",
     "step 3\nError executing job with overrides: ['trainer.n_gpus_per_node=8']\n", "unknown", "low"),
    ("bash reports a SIGKILLed foreground job",
     "step 9\n/bin/sh: line 1: 4242 Killed python train.py --config a.yaml\n", "host_oom", "low"),
    ("/dev/shm full while a DataLoader shares a batch",
     "[rank0]: RuntimeError: unable to write to file </torch_981_2839475_0>: No space left on device (28)\n"
     + AGENT_FAIL.format(code=1, lr=0), "shm_bus_error", "high"),
    ("fairseq's minimum loss scale",
     "[rank0]: FloatingPointError: Minimum loss scale reached (0.0001). Your loss is probably exploding.\n",
     "nan_loss", "high"),
    ("a worker killed outright, seen by subprocess",
     "subprocess.CalledProcessError: Command '['python', 'train.py']' died with <Signals.SIGKILL: 9>.\n",
     "host_oom", "low"),
    ("SIGTERM sent by torchrun is never the class",
     "W1127 10:00:00.000000 1 torch/distributed/elastic/multiprocessing/api.py:1028] Sending process 5 closing signal "
     "SIGTERM\n" + AGENT_FAIL.format(code=1, lr=2), "unknown", "low"),
    # CONSTRUCTED from deepspeed/launcher/launch.py and runner.py (sigkill_handler), as a Megatron-DeepSpeed log shows
    ("DeepSpeed's launcher stopped by a signal, its own handler raising on the way out",
     "[2022-10-31 11:03:50,563] [INFO] [launch.py:286:sigkill_handler] Killing subprocess 22474\n"
     "Traceback (most recent call last):\n  File \"pretrain_gpt.py\", line 300, in <module>\n    main()\n"
     "KeyboardInterrupt\n"
     "Traceback (most recent call last):\n"
     "  File \"/opt/conda/lib/python3.8/site-packages/deepspeed/launcher/runner.py\", line 519, in main\n"
     "    result.wait()\n"
     "  File \"/opt/conda/lib/python3.8/site-packages/deepspeed/launcher/runner.py\", line 511, in sigkill_handler\n"
     "    result_kill = subprocess.Popen(kill_cmd, env=env)\n"
     "NameError: free variable 'kill_cmd' referenced before assignment in enclosing scope\n"
     "[2022-10-31 11:03:54,132] [INFO] [launch.py:295:sigkill_handler] Main process received SIGTERM, exiting\n",
     "sigterm", "high"),
    ("`deepspeed ... >> train.log`: a failed launch, then one that finished (each starts with WORLD INFO DICT)",
     "[2022-11-22 05:16:18,289] [INFO] [launch.py:142:main] WORLD INFO DICT: {'worker-0': [0, 1]}\n"
     "[1669076180.993959] [host:69690:0]          ib_md.c:348  UCX  ERROR ibv_reg_mr(address=0x7f8fdd800000, "
     "length=39845888, access=0xf) failed: Cannot allocate memory\n"
     "[2022-11-22 05:19:27,742] [ERROR] [launch.py:324:sigkill_handler] ['python', '-u', 'main.py', '--local_rank=1'] "
     "exits with return code = 2\n"
     "[2022-11-22 05:33:18,289] [INFO] [launch.py:142:main] WORLD INFO DICT: {'worker-0': [0, 1]}\n"
     "iter 5474 | LR [0.0001]| val_acc 97.97000122070312\n"
     "[2022-11-22 11:27:14,442] [INFO] [launch.py:350:main] Process 29248 exits successfully.\n"
     "[2022-11-22 11:27:15,001] [INFO] [launch.py:350:main] Process 29249 exits successfully.\n", "none", "high"),
    ("DeepSpeed's launcher after a worker failed: the worker's error, not the handler's",
     "[rank3]: ValueError: labels must be a list\n"
     "[2026-11-27 10:00:00,000] [INFO] [launch.py:319:sigkill_handler] Killing subprocess 4242\n"
     "[2026-11-27 10:00:00,100] [ERROR] [launch.py:325:sigkill_handler] ['python', '-u', 'train.py', '--local_rank=3'] "
     "exits with return code = 1\n", "python_exception", "high"),
    # CONSTRUCTED from HF datasets (utils/py_utils.py iflatmap_unordered) and slurmstepd's task/cgroup plugin
    ("datasets' map worker killed by the cgroup OOM killer, as SLURM reports it",
     "Running tokenizer on dataset (num_proc=16):  40%|####      | 400/1000\n"
     "RuntimeError: One of the subprocesses has abruptly died during map operation.To debug the error, disable "
     "multiprocessing.\n"
     "slurmstepd: error: Detected 1 oom_kill event in StepId=85905.batch. Some of the step tasks have been OOM "
     "Killed.\n", "host_oom", "high"),
    ("datasets' map worker died, nothing says why",
     "Running tokenizer on dataset (num_proc=16):  40%|####      | 400/1000\n"
     "RuntimeError: One of the subprocesses has abruptly died during map operation.To debug the error, disable "
     "multiprocessing.\n", "unknown", "low"),
    ("a SIGINT from the keyboard is a stop from outside",
     "W1127 10:00:00.000000 1 torch/distributed/elastic/agent/server/api.py:753] Received 2 death signal, shutting "
     "down workers\n", "sigterm", "high"),
    ("device-side assert",
     "[rank1]: RuntimeError: CUDA error: device-side assert triggered\n" + AGENT_FAIL.format(code=1, lr=1),
     "cuda_error", "high"),
    ("host RAM through PyTorch's CPU allocator",
     "RuntimeError: [enforce fail at alloc_cpu.cpp:114] data. DefaultCPUAllocator: not enough memory: you tried to "
     "allocate 1073741824 bytes.\n", "host_oom", "high"),
    ("mpirun --tag-output prefixes",
     "[1,3]<stderr>:Traceback (most recent call last):\n[1,3]<stderr>:torch.OutOfMemoryError: CUDA out of memory. "
     "Tried to allocate 2.00 GiB.\n", "cuda_oom", "high"),
    ("accelerate's 'stderr: ' prefix",
     "stderr: Traceback (most recent call last):\nstderr: FileNotFoundError: [Errno 2] No such file: 'data.json'\n",
     "python_exception", "medium"),
    ("torch 1.0's NCCL wording",
     "RuntimeError: NCCL Error 3: internal error\n" + AGENT_FAIL.format(code=1, lr=0), "nccl_error", "high"),
    # --- issue 9: one case per producer wording (patterns.py names the source of each) ---
    ("c10d heartbeat monitor, torch 2.3 wording",
     "[rank144]:[E ProcessGroupNCCL.cpp:1316] [PG 0 Rank 144] Heartbeat monitor timed out! Process will be terminated "
     "after dumping debug info. workMetaList_.size()=1\n", "nccl_timeout", "high"),
    ("c10d blocking-wait timeout",
     "[Rank 0] Work WorkNCCL(SeqNum=3, OpType=ALLREDUCE, NumelIn=1, NumelOut=1, Timeout(ms)=600000) timed out in "
     "blocking wait.\n", "nccl_timeout", "high"),
    ("an E line of ProcessGroupNCCL.cpp cut off mid-message is an NCCL failure",
     "[rank3]:[E1127 10:00:00.000000003 ProcessGroupNCCL.cpp:1595] [PG ID 0 PG GUID 0(default_pg) Rank 3] ProcessGro\n",
     "nccl_error", "low"),
    ("NCCL IB async event",
     "node-1:99:120 [0] transport/net_ib.cc:101 NCCL WARN NET/IB : mlx5_0:1 Got async error event: port error\n",
     "nccl_error", "high"),
    ("NCCL's remote error string in a DistBackendError",
     "[rank2]: torch.distributed.DistBackendError: NCCL error in: ../torch/csrc/distributed/c10d/NCCLUtils.hpp:317, "
     "remote process exited or there was a network error, NCCL version 2.20.5\n", "nccl_error", "high"),
    ("torch 2.8 AcceleratorError", "[rank0]: torch.AcceleratorError: CUDA error: misaligned address\n",
     "cuda_error", "high"),
    ("cuBLAS execution failure",
     "RuntimeError: CUDA error: CUBLAS_STATUS_EXECUTION_FAILED when calling `cublasGemmEx( handle, opa, opb, m, n, k)`\n",
     "cuda_error", "high"),
    ("NVIDIA driver Xid", "NVRM: Xid (PCI:0000:3b:00): 79, pid=1234, name=python, GPU has fallen off the bus.\n",
     "cuda_error", "high"),
    ("THC out of memory is a CUDA OOM",
     "RuntimeError: cuda runtime error (2) : out of memory at /pytorch/aten/src/THC/THCCachingAllocator.cpp:510\n",
     "cuda_oom", "high"),
    ("NCCL failing to allocate GPU memory",
     "node-1:99:120 [0] include/alloc.h:103 NCCL WARN Failed to CUDA calloc 10485760 bytes\n", "cuda_oom", "high"),
    ("Ray's OutOfMemoryError is host RAM, not the GPU",
     "ray.exceptions.OutOfMemoryError: Task was killed due to the node running low on memory.\n", "host_oom", "high"),
    ("Ray actor died: the cause is elsewhere",
     "(TaskRunner pid=9) ray.exceptions.ActorDiedError: The actor died unexpectedly before finishing this task.\n",
     "unknown", "low"),
    ("kernel memcg OOM killer",
     "Memory cgroup out of memory: Killed process 4242 (python) total-vm:81234kB, anon-rss:7777kB\n", "host_oom",
     "high"),
    ("slurmstepd memory limit", "slurmstepd: error: StepId=7.batch exceeded memory limit (734003200 > 52428800), "
     "being killed\n", "host_oom", "high"),
    ("srun task killed by a signal, no other cause", "srun: error: node01: task 3: Segmentation fault (core dumped)\n",
     "segfault", "high"),
    ("glog failure signal handler",
     "*** SIGSEGV (@0x0) received by PID 71567 (TID 0x7f173a5df700) from PID 0; stack trace: ***\n", "segfault",
     "high"),
    ("mp.spawn process killed", "torch.multiprocessing.spawn.ProcessExitedException: process 1 terminated with signal "
     "SIGSEGV\n", "segfault", "high"),
    ("DeepSpeed loss scale at minimum",
     "Exception: Current loss scale already at minimum - cannot decrease scale anymore. Exiting run.\n", "nan_loss",
     "high"),
    ("torch anomaly mode", "RuntimeError: Function 'MmBackward0' returned nan values in its 0th output.\n",
     "nan_loss", "high"),
    ("clip_grad_norm_ error_if_nonfinite",
     "RuntimeError: The total norm of order 2.0 for gradients from `parameters` is non-finite, so it cannot be "
     "clipped.\n", "nan_loss", "high"),
    ("Lightning terminate_on_nan", "ValueError: The loss returned in `training_step` is tensor(nan, device='cuda:0').\n",
     "nan_loss", "high"),
    ("Megatron's NaN check", "AssertionError: Rank 13: found NaN in local grad norm in backward pass before "
     "data-parallel communication collective. Device: 5, node: node-15-11\n", "nan_loss", "high"),
    ("transformers 5 logs values as strings",
     "{'loss': '1.706e+05', 'grad_norm': 'nan', 'learning_rate': '1e-05', 'epoch': '0.5'}\n", "nan_loss", "medium"),
    ("DeepSpeed OVERFLOW alone is not a failure",
     "[deepspeed] OVERFLOW! Rank 0 Skipping step. Attempted loss scale: 65536, reducing to 32768\n"
     "{'train_runtime': 10.0, 'train_loss': 1.2, 'epoch': 1.0}\n", "none", "high"),
    ("a shell's exit status 139 is SIGSEGV", "srun: error: node01: task 0: Exited with exit code 139\n",
     "segfault", "high"),
    ("a wrapper's CalledProcessError with a signal status",
     "subprocess.CalledProcessError: Command '['python', 'train.py']' returned non-zero exit status -7.\n",
     "shm_bus_error", "high"),
    ("Ray names the actor's exception: a bug", "ray.exceptions.RayTaskError(KeyError): ray::IPPO.train() "
     "(pid=55550, ip=192.168.79.142)\n", "python_exception", "medium"),
    ("Ray names the actor's OutOfMemoryError: torch's, not Ray's",
     "ray.exceptions.RayTaskError(OutOfMemoryError): ray::WorkerDict.update_actor() (pid=118848, ip=10.1.2.3)\n",
     "cuda_oom", "medium"),
    ("Ray's actor death carries the memory monitor's detail",
     "ray.exceptions.RayActorError: The actor died unexpectedly before finishing this task.\n"
     "The actor is dead because its worker process has died. Worker exit type: USER_ERROR Worker exit detail: Task "
     "was killed due to the node running low on memory.\n", "host_oom", "high"),
    ("a device assert whose 'failed.' went to the next line",
     "/pytorch/aten/src/ATen/native/cuda/Indexing.cu:1422: indexSelectLargeIndex: block: [31,0,0], thread: [16,0,0] "
     "Assertion `srcIndex < srcSelectDimSize`\n failed.\n", "cuda_error", "high"),
    ("stamped lines out of order: the earliest failure",
     "[rank7]:[E626 05:14:36.393067540 ProcessGroupNCCL.cpp:1743] [PG ID 0 PG GUID 0(default_pg) Rank 7] "
     "ProcessGroupNCCL's watchdog got stuck for 480 seconds without making progress\n"
     "[rank2]:[E626 05:06:30.929096625 ProcessGroupNCCL.cpp:632] [Rank 2] Watchdog caught collective operation "
     "timeout: WorkNCCL(SeqNum=12, OpType=_ALLGATHER_BASE, NumelIn=1, NumelOut=8, Timeout(ms)=1800000) ran for "
     "1800065 milliseconds before timing out.\n", "nccl_timeout", "high"),
    ("ENOMEM when forking DataLoader workers", "OSError: [Errno 12] Cannot allocate memory\n", "host_oom", "medium"),
    ("DeepSpeed's loss scale stuck at its floor",
     "".join("[deepspeed] OVERFLOW! Rank 0 Skipping step. Attempted loss scale: 1, reducing to 1\n" for _ in range(3)),
     "nan_loss", "medium"),
    ("fairseq's loss scale collapsing",
     "| INFO | fairseq.trainer | NOTE: overflow detected, setting loss scale to: 0.000244140625\n", "nan_loss",
     "medium"),
    ("fairseq's progress line with an infinite gradient norm",
     "| epoch 001:   2%| loss=7746569234820.15 (126329286789.38), gnorm=inf, lr=0.0005\n", "nan_loss", "medium"),
    ("SLURM cancelling a step because a task failed is not a stop from outside",
     "srun: error: *** STEP 52222788.0 ON nid002888 CANCELLED AT 2026-04-29T23:36:37 DUE TO TASK FAILURE ***\n"
     "srun: error: nid002888: tasks 0-57,59-63: Terminated\n", "unknown", "low"),
    ("SLURM node failure wording", "slurmstepd: error: *** JOB 77 ON n01 CANCELLED AT 2026-01-01T00:00:00 DUE TO NODE "
     "FAILURE, SEE SLURMCTLD LOG FOR DETAILS ***\n", "sigterm", "high"),
    ("argparse", "train.py: error: the following arguments are required: --config\n", "python_exception", "high"),
    ("an error in words no pattern knows is never 'none'",
     "FATAL: cannot open shared object file libfoo.so\n", "unknown", "low"),
    ("a warning that mentions failure is not an error",
     "/usr/lib/python3/site-packages/torch/x.py:368: UserWarning: Failed to initialize NumPy\n", "none", "medium"),
    ("a benign NCCL INFO 'failed' is not an error",
     "node-1:99:99 [0] NCCL INFO NET/Plugin: Failed to find ncclNetPlugin_v6 symbol.\n", "none", "medium"),
    ("a clean finish outweighs an error line before it",
     "ERROR: wandb upload failed, retrying\n{'train_runtime': 10.0, 'train_loss': 1.2, 'epoch': 1.0}\n", "none",
     "high"),
    ("a training run that finished",
     "{'loss': 1.1, 'epoch': 3.0}\n{'train_runtime': 100.0, 'train_loss': 1.2, 'epoch': 3.0}\n", "none", "high"),
]


@pytest.mark.parametrize("text,cls,confidence", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_wordings(tmp_path, text, cls, confidence):
    p = tmp_path / "x.log"
    p.write_text(text)
    d = diagnose([str(p)])
    assert (d.cls, d.confidence) == (cls, confidence), d.reason


# Severity from structure, outcome in time order (issue 17): each case is the shape a producer prints.
SEVERITY_CASES = [
    ("compiler flags in an environment dump are not errors",
     " - Build settings: CXX_FLAGS= -Wall -Werror=return-type -Werror=non-virtual-dtor -Wno-error=deprecated\n",
     "none"),
    ("a notifier's error and metric names are not errors",
     "bot INFO: posted\nAn error occurred connecting to Discord\nerrors: 0, error_rate: 0.0, failed samples: 0\n",
     "none"),
    ("a model's generated text is not an error",
     "**Final answer:** There is an error in the problem statement.\nreward is 0.1\n", "none"),
    ("a level value in a config dump is not an error", "log_level: ERROR\n'level': 'ERROR'\n", "none"),
    ("Python logging's ERROR level is an error", "ERROR:root:could not open shard 12\n", "unknown"),
    ("a program's error: prefix is an error", "error: RPC failed; curl 56 GnuTLS recv error\n", "unknown"),
    ("the shell's core dump report is an error", "step 10\nAborted (core dumped)\n", "unknown"),
    ("a glog E line that says it failed is an error",
     "E1127 10:00:00.000000 1 some/file.cpp:12] the operation failed\n", "unknown"),
    ("a caught traceback before HF's clean finish is not the outcome",
     "Traceback (most recent call last):\n  File \"t.py\", line 1, in f\nKeyError: 'x'\n"
     "{'train_runtime': 12.0, 'train_loss': 1.0}\n", "none"),
    ("a kill after the clean finish wins",
     "{'train_runtime': 12.0, 'train_loss': 1.0}\n/bin/sh: line 1: 4242 Killed python train.py\n", "host_oom"),
    ("a diverged loss before the finish still counts",
     "{'loss': nan, 'grad_norm': nan, 'epoch': 1.0}\n{'train_runtime': 12.0, 'train_loss': nan}\n", "nan_loss"),
    ("an appended attempt that did not fail is the outcome",
     "[12/22 19:15:01] detectron2 INFO: Rank of current process: 0. World size: 4\n"
     "RuntimeError: Expected size for first two dimensions of batch2 tensor\n"
     "[12/22 19:31:02] detectron2 INFO: Rank of current process: 0. World size: 4\n"
     "[12/22 19:31:29] d2.engine.train_loop INFO: Starting training from iteration 0\n", "none"),
    ("an appended attempt that failed is the outcome",
     "[12/22 19:15:01] detectron2 INFO: Rank of current process: 0. World size: 4\n"
     "[12/22 19:31:02] detectron2 INFO: Rank of current process: 0. World size: 4\n"
     "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB.\n", "cuda_oom"),
    ("a helper step's task exit before a training step that trains is not the outcome",
     "srun: error: node7: task 0: Exited with exit code 1\n"
     "[12/22 19:31:29] d2.engine.train_loop INFO: Starting training from iteration 0\n"
     "[12/22 19:41:29] d2.utils.events INFO:  eta: 1:02:03  iter: 19  total_loss: 1.2\n", "none"),
    ("SLURM preemption through submitit is an outside stop",
     "submitit WARNING (2024-03-02 14:00:12,448) - Caught signal SIGUSR2 on node7: this job is preempted.\n",
     "sigterm"),
    ("a spot reclaim is an outside stop", "Received Spot Instance interruption notice, shutting down\n", "sigterm"),
    ("a Kubernetes eviction for disk is an outside stop",
     "Pod was evicted: The node was low on resource: ephemeral-storage.\n", "sigterm"),
]


@pytest.mark.parametrize("text,cls", [c[1:] for c in SEVERITY_CASES], ids=[c[0] for c in SEVERITY_CASES])
def test_severity_and_time_order(tmp_path, text, cls):
    p = tmp_path / "x.log"
    p.write_text(text)
    assert diagnose([str(p)]).cls == cls


def test_genuine_lf_phases_config_and_sigkill_headline():
    """Issue 21 items 6, 7b, 10 on the genuine LLaMA-Factory logs: the phase is the last state before the failure in
    log order; the config named by the wrapper's CalledProcessError is run.config; a bare SIGKILL says what is known."""
    from conftest import SHARED, shared_or_skip
    from oomfix.diagnose import diagnose_logs
    from oomfix.report import headline

    g = SHARED / "corpus" / "genuine_lf"
    shared_or_skip(g / "labels.json")
    phases = {"sighup_interactive_nohup_job_a.log": "training step 5/160",
              "sighup_interactive_nohup_job_b.log": "training step 5/160",
              "sighup_tmux_script_held_job_a.log": "training step 10/160",
              "sighup_tmux_script_held_job_b.log": "training step 6/160",
              "sigterm_agent_job_a.log": "training step 11/160",
              "oomfix_run_attempt2_resume_cpu_device_error.log": "checkpoint resume"}
    for name, phase in phases.items():
        assert diagnose_logs([str(g / name)]).root_cause.phase == phase, name
    for name in ("exc_bad_row.log", "exc_missing_template.log", "port_in_use.log"):
        assert diagnose_logs([str(g / name)]).run.config == "configs/qwen3_lora_sft_b.yaml", name
    d = diagnose_logs([str(g / "sigkill_worker_rank1_job_b.log")])
    assert d.confidence == "low" and "OOM killer)" not in headline(d) and "SIGKILL" in headline(d)
    assert not any("dataloader_num_workers" in a for a in d.advice)


def test_a_frame_source_line_is_code_not_the_root_cause(tmp_path):
    p = tmp_path / "x.log"
    p.write_text('[rank1]: Traceback (most recent call last):\n[rank1]:   File "/w/t.py", line 33, in main\n'
                 "[rank1]:     raise torch.OutOfMemoryError(msg)\n"
                 "[rank1]: torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 1 has a total "
                 "capacity of 79.25 GiB of which 1.06 GiB is free.\n")
    from oomfix.diagnose import diagnose_logs

    d = diagnose_logs([str(p)])
    assert (d.cls, d.root_cause.line, d.root_cause.exception) == ("cuda_oom", 4, "torch.OutOfMemoryError")
    assert d.root_cause.raised_at == "/w/t.py:33 in main" and d.memory.requested_gib == 2.0


def test_a_clean_finish_past_the_head_of_a_large_log_is_found(tmp_path):
    """The finish marker decides the outcome wherever it is: a caught traceback at the start of a 5 MB log, HF's
    finish at its end, is a clean run with both engines."""
    from oomfix.reader import Prefilter

    p = tmp_path / "big.log"
    step = "{'loss': 1.2345, 'grad_norm': 0.3, 'learning_rate': 1e-05, 'epoch': 0.50}\n"
    p.write_text("Traceback (most recent call last):\n  File \"x.py\", line 1, in f\nKeyError: 'caught'\n"
                 + step * 70000 + "{'train_runtime': 1240.5, 'train_loss': 1.3, 'epoch': 1.0}\n")
    assert p.stat().st_size > 4 << 20  # past patterns.HEAD_BYTES
    assert diagnose([str(p)]).cls == "none"
    assert diagnose([str(p)], prefilter=Prefilter()).cls == "none"
