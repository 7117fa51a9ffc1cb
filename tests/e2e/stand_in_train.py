"""A tiny stand-in for a LLaMA-Factory / HF Trainer run, started by a genuine torchrun (gloo, CPU) in
tests/test_supervise.py.

usage: torchrun --nproc_per_node 2 stand_in_train.py CONFIG.yaml [key=value ...]

It reads a LLaMA-Factory-style YAML (and `key=value` overrides after it, as LLaMA-Factory's `read_args` merges
them with OmegaConf.from_cli), prints the start-up lines LLaMA-Factory and the HF Trainer print, all-reduces once per
step, and fails the way a real run fails:
- STAND_IN_FITS=N: the memory that "fits", in micro-batch units. A step costs the micro batch, halved when gradient
  checkpointing is on and halved again under ZeRO-3 (so STAND_IN_FITS=0.3 OOMs at micro batch 1 until both are on);
  more than N raises `torch.OutOfMemoryError` with the CUDA caching allocator's message on rank STAND_IN_BAD_RANK
  (default 1) at step STAND_IN_OOM_STEP (default 1). Gradient checkpointing counts only when the config turns it
  on explicitly (`gradient_checkpointing: true`, or LLaMA-Factory's `disable_gradient_checkpointing: false`);
  ZeRO-3 when `deepspeed:` names a JSON whose zero_optimization.stage is 3 (the JSON is read, DeepSpeed is not used).
- STAND_IN_MODE=value_error: LLaMA-Factory's argument check raises a ValueError on every rank.
- STAND_IN_SLEEP=S: seconds per step (so that a test can signal a running job); rank 0 prints READY before step 1.
- STAND_IN_PIDS=DIR: each worker writes its pid to DIR/rankN.pid.
With `save_steps` and `output_dir`, rank 0 writes `checkpoint-N` directories (trainer_state.json inside), and
`resume_from_checkpoint` continues after the saved step, as the HF Trainer does.
"""
import json
import os
import sys
import time

import torch
import torch.distributed as dist
import yaml


def _now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S")


def _read_args(argv: list[str]) -> dict:
    with open(argv[0], encoding="utf-8") as f:
        cfg = yaml.safe_load(f) or {}
    for item in argv[1:]:
        key, _, value = item.partition("=")
        cfg[key] = yaml.safe_load(value)
    return cfg


def _oom_message(micro: int, rank: int) -> str:
    # c10/cuda/CUDACachingAllocator.cpp's wording (torch 2.x); reserved-but-unallocated stays below the request,
    # so this is not a fragmentation case
    want = 0.75 * micro
    total = 79.25
    free = 0.31
    in_use = total - free
    allocated = in_use - 1.12
    return (f"CUDA out of memory. Tried to allocate {want:.2f} GiB. GPU {rank} has a total capacity of {total:.2f} GiB "
            f"of which {free:.2f} GiB is free. Including non-PyTorch memory, this process has {in_use:.2f} GiB memory "
            f"in use. Of the allocated memory {allocated:.2f} GiB is allocated by PyTorch, and 0.27 GiB is reserved by "
            f"PyTorch but unallocated. If reserved but unallocated memory is large try setting "
            f"PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to avoid fragmentation.  See documentation for Memory "
            f"Management  (https://pytorch.org/docs/stable/notes/cuda.html#environment-variables)")


def memory_cost(cfg: dict, micro: int) -> float:
    cost = float(micro)
    if cfg.get("gradient_checkpointing") is True or cfg.get("disable_gradient_checkpointing") is False:
        cost /= 2
    ds = cfg.get("deepspeed")
    if isinstance(ds, str) and os.path.isfile(ds):
        with open(ds, encoding="utf-8") as f:
            if (json.load(f).get("zero_optimization") or {}).get("stage") == 3:
                cost /= 2
    return cost


def forward(batch: torch.Tensor, micro: int, cost: float, fits: float, rank: int) -> torch.Tensor:
    if cost > fits:
        raise torch.OutOfMemoryError(_oom_message(micro, rank))
    return batch * 2


def main() -> None:
    cfg = _read_args(sys.argv[1:])
    rank = int(os.environ["RANK"])
    world = int(os.environ["WORLD_SIZE"])
    pids = os.environ.get("STAND_IN_PIDS")
    if pids:
        with open(os.path.join(pids, f"rank{rank}.pid"), "w") as f:
            f.write(str(os.getpid()))
    dist.init_process_group("gloo")
    # one write per line, as the logging module makes it (print's separate newline write lets ranks interleave)
    sys.stdout.write(f"[INFO|{_now()}] llamafactory.hparams.parser:406 >> Process rank: {rank}, world size: {world}, "
                     f"device: cpu, distributed training: True, compute dtype: torch.float32\n")
    sys.stdout.flush()
    if os.environ.get("STAND_IN_MODE") == "value_error":
        raise ValueError("Please specify dataset for training.")
    micro = int(cfg.get("per_device_train_batch_size", 8))
    accum = int(cfg.get("gradient_accumulation_steps", 1))
    steps = int(cfg.get("max_steps", 3))
    save_steps = int(cfg.get("save_steps", 0) or 0)
    out = cfg.get("output_dir")
    fits = float(os.environ.get("STAND_IN_FITS", "1000000"))
    bad = int(os.environ.get("STAND_IN_BAD_RANK", "1"))
    oom_step = int(os.environ.get("STAND_IN_OOM_STEP", "1"))
    sleep = float(os.environ.get("STAND_IN_SLEEP", "0"))
    start = 0
    resume = cfg.get("resume_from_checkpoint")
    if resume:
        with open(os.path.join(resume, "trainer_state.json"), encoding="utf-8") as f:
            start = json.load(f)["global_step"]
    if rank == 0:
        stamp = _now() + ",000"
        for line, text in ((2409, "***** Running training *****"), (2410, "  Num examples = 1,000"),
                           (2411, "  Num Epochs = 1"),
                           (2412, f"  Instantaneous batch size per device = {micro}"),
                           (2415, f"  Total train batch size (w. parallel, distributed & accumulation) = "
                                  f"{world * micro * accum}"),
                           (2416, f"  Gradient Accumulation steps = {accum}"),
                           (2417, f"  Total optimization steps = {steps}")):
            print(f"[INFO|trainer.py:{line}] {stamp} >> {text}", flush=True)
        if resume:
            print(f"[INFO|trainer.py:2433] {stamp} >>   Continuing training from checkpoint, will skip to saved "
                  f"global_step", flush=True)
            print(f"[INFO|trainer.py:2434] {stamp} >>   Continuing training from global step {start}", flush=True)
        if sleep:
            print("READY", flush=True)
    for step in range(start + 1, steps + 1):
        t = torch.ones(4)
        if rank == bad and step == oom_step:
            t = forward(t, micro, memory_cost(cfg, micro), fits, rank)
        dist.all_reduce(t)
        if sleep:
            time.sleep(sleep)
        if rank == 0:
            sys.stderr.write(f"\r{step * 100 // steps:3d}%|#####     | {step}/{steps} [00:0{step}<00:01,  1.00it/s]")
            sys.stderr.flush()
            if save_steps and out and step % save_steps == 0:
                ckpt = os.path.join(out, f"checkpoint-{step}")
                os.makedirs(ckpt, exist_ok=True)
                with open(os.path.join(ckpt, "trainer_state.json"), "w", encoding="utf-8") as f:
                    json.dump({"global_step": step, "train_batch_size": micro}, f)
    if rank == 0:
        print("\n{'train_runtime': 1.2, 'train_samples_per_second': 9.9, 'train_loss': 1.234, 'epoch': 1.0}",
              flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
