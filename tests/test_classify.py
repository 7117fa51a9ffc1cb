"""Classifier cases in a few lines each: wordings of real logs beyond the fixtures."""
import pytest

from oomfix.classify import diagnose

AGENT_FAIL = ("E1127 10:00:00.000000 1 torch/distributed/elastic/multiprocessing/api.py:1002] failed (exitcode: {code}) "
              "local_rank: {lr} (pid: 77) of binary: python\n")

CASES = [
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
    ("a training run that finished",
     "{'loss': 1.1, 'epoch': 3.0}\n{'train_runtime': 100.0, 'train_loss': 1.2, 'epoch': 3.0}\n", "none", "high"),
]


@pytest.mark.parametrize("text,cls,confidence", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_wordings(tmp_path, text, cls, confidence):
    p = tmp_path / "x.log"
    p.write_text(text)
    d = diagnose([str(p)])
    assert (d.cls, d.confidence) == (cls, confidence), d.reason
