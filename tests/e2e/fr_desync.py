"""Genuine Flight Recorder dumps from torch's gloo backend (CPU), for tests/test_flightrec.py.

usage: TORCH_NCCL_DEBUG_INFO_TEMP_FILE=DIR/nccl_trace_rank_ torchrun --nproc_per_node 2 fr_desync.py

Both ranks all-reduce FR_STEPS times (default 3); then rank 0 enters one more all_reduce that rank 1 never enters
(a desync: rank 1 "skipped" a step), so rank 0's collective times out after FR_TIMEOUT seconds (default 3). Each rank
then writes torch's own dump (torch._C._distributed_c10d._dump_fr_trace(): the bytes ProcessGroupNCCL's
DebugInfoWriter writes on a timeout) to TORCH_NCCL_DEBUG_INFO_TEMP_FILE + str(rank), as NCCL does with
TORCH_NCCL_DUMP_ON_TIMEOUT=1. gloo has no dump-on-timeout of its own; the recording is torch's.
"""
import datetime
import os
import sys
import time

import torch
import torch.distributed as dist
from torch._C._distributed_c10d import _dump_fr_trace


def dump(rank: int) -> None:
    prefix = os.environ.get("TORCH_NCCL_DEBUG_INFO_TEMP_FILE", "/tmp/nccl_trace_rank_")
    with open(prefix + str(rank), "wb") as f:
        f.write(_dump_fr_trace())


def main() -> None:
    timeout = float(os.environ.get("FR_TIMEOUT", "3"))
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=timeout))
    rank = dist.get_rank()
    t = torch.ones(4)
    for _ in range(int(os.environ.get("FR_STEPS", "3"))):
        dist.all_reduce(t)
    if rank == 0:
        try:
            dist.all_reduce(t)  # rank 1 never enters this one
        except Exception as e:  # noqa: BLE001 - gloo's timeout error, whatever its type in this version
            print(f"rank 0: collective timed out: {type(e).__name__}: {str(e).splitlines()[0]}", flush=True)
        dump(rank)
        time.sleep(2)  # rank 1 writes its dump meanwhile (torchrun stops the others when one rank exits 1)
        os._exit(1)
    time.sleep(timeout + 0.5)
    dump(rank)
    os._exit(0)


if __name__ == "__main__":
    main()
