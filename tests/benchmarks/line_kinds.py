"""Ordinary line kinds of real training logs: none of them is a failure, many carry failure-like words.

Each kind is the wording its producer prints (the source file is named), with the numbers that vary from line to line
(ranks, steps, times, values) varied. The wording is copied from the corpus logs (../shared/corpus) or from the
producer's source; the values are made up. A kind may print several physical lines, or redraw one with "\\r" (tqdm).
Used by mixtures.py: logs made of random mixtures of these kinds, ending in a CUDA OOM, must cost little more than
grep and keep their class (cuda_oom): `number of nan iterations: 0` is not a NaN loss, an NCCL INFO line is not an
NCCL failure, a glog W line of ProcessGroupNCCL.cpp is a warning.
"""
from __future__ import annotations

from collections.abc import Callable


def _t(i: int) -> str:
    return f"2026-11-27 {10 + i // 3600 % 12:02d}:{i // 60 % 60:02d}:{i % 60:02d},{i * 37 % 1000:03d}"


def _g(i: int) -> str:
    """glog time: MMDD HH:MM:SS.micro (c10/util/Logging.cpp; torch >= 2.4 prints nanoseconds)"""
    return f"1127 {10 + i // 3600 % 12:02d}:{i // 60 % 60:02d}:{i % 60:02d}.{i * 7919 % 10**9:09d}"


def _bar(n: int, total: int, unit: str = "it") -> str:
    pct = n * 100 // total
    full = pct // 10
    return f"{pct:3d}%|{'█' * full}{' ' * (10 - full)}| {n}/{total} [00:{n % 60:02d}<01:{(total - n) % 60:02d},  " \
           f"{1 + n % 7}.{n % 100:02d}{unit}/s]"


# --- torch: c10d (torch/csrc/distributed/c10d/ProcessGroupNCCL.cpp, reducer.cpp, Utils.hpp) -----------------------
def c10d_barrier(i: int) -> str:
    # ProcessGroupNCCL::barrier, torch 2.4-2.13 (line numbers vary by version): a glog W line
    r = i % 8
    return (f"[rank{r}]:[W{_g(i)} ProcessGroupNCCL.cpp:4715] [PG ID 0 PG GUID 0 Rank {r}]  using GPU {r} to perform "
            f"barrier as devices used by this process are currently unknown. This can potentially cause a hang if this "
            f"rank to GPU mapping is incorrect. You can pecify device_id in init_process_group() to force use of a "
            f"particular device.\n")


def c10d_not_destroyed(i: int) -> str:
    # ProcessGroupNCCL::~ProcessGroupNCCL, torch 2.4+: printed at every normal exit that skipped destroy_process_group
    r = i % 8
    return (f"[rank{r}]:[W{_g(i)} ProcessGroupNCCL.cpp:1250] Warning: WARNING: process group has NOT been destroyed "
            f"before we destruct ProcessGroupNCCL. On normal program exit, the application should call "
            f"destroy_process_group to ensure that any pending NCCL operations have finished in this process. In rare "
            f"cases this process can exit before this point and block the progress of another member of the process "
            f"group. This constraint has always been present,  but this warning has only been added since PyTorch 2.4 "
            f"(function operator())\n")


def c10d_env_deprecated(i: int) -> str:
    # c10d Utils.hpp getCvarBool: a deprecated environment variable, once per process group
    return (f"[W{_g(i)} Utils.hpp:133] Warning: Environment variable NCCL_ASYNC_ERROR_HANDLING is deprecated; use "
            f"TORCH_NCCL_ASYNC_ERROR_HANDLING instead (function operator())\n")


def ddp_reducer(i: int) -> str:
    # torch/csrc/distributed/c10d/reducer.cpp: find_unused_parameters=True with none unused
    r = i % 8
    return (f"[rank{r}]:[W{_g(i)} reducer.cpp:1400] Warning: find_unused_parameters=True was specified in DDP "
            f"constructor, but did not find any unused parameters in the forward pass. This flag results in an extra "
            f"traversal of the autograd graph every iteration,  which can adversely affect performance. If your model "
            f"indeed never has any unused parameters in the default process group, consider turning this flag off. "
            f"Note that this warning may be a false positive if your model has flow control causing later iterations "
            f"to have unused parameters. (function operator())\n")


# --- torch elastic (torch/distributed/run.py, elastic/agent/server/api.py) ------------------------------------------
def elastic_omp(i: int) -> str:
    t = f"W{_g(i)[:-3]} {3000 + i % 97}"
    return (f"{t} torch/distributed/run.py:793] \n{t} torch/distributed/run.py:793] "
            f"*****************************************\n{t} torch/distributed/run.py:793] Setting OMP_NUM_THREADS "
            f"environment variable for each process to be 1 in default, to avoid your system being overloaded, please "
            f"further tune the variable for optimal performance in your application as needed. \n")


def elastic_info(i: int) -> str:
    # torch < 2.4 agent, logging.basicConfig style
    return (f"INFO:torch.distributed.elastic.agent.server.api:[default] Starting worker group\n"
            f"INFO:torch.distributed.elastic.agent.server.local_elastic_agent:log directory set to: "
            f"/tmp/torchelastic_{i % 9973:x}k_ce/none_{i % 89}wq\n"
            f"INFO:torch.distributed.elastic.multiprocessing:Setting worker{i % 8} reply file to: "
            f"/tmp/torchelastic_{i % 9973:x}k_ce/none_{i % 89}wq/attempt_0/{i % 8}/error.json\n")


# --- NCCL (src/init.cc, transport/*.cc, graph/*.cc with NCCL_DEBUG=INFO) --------------------------------------------
def nccl_channel(i: int) -> str:
    k = i % 8
    return (f"gpu-node-01:{4100 + k}:{5200 + k} [{k}] NCCL INFO Channel {i % 32:02d}/0 : {k}[{k}] -> "
            f"{(k + 1) % 8}[{(k + 1) % 8}] via P2P/IPC/read\n")


def nccl_init(i: int) -> str:
    k = i % 8
    return (f"gpu-node-01:{4100 + k}:{5200 + k} [{k}] NCCL INFO comm 0x55d0c8{i % 4096:04x} rank {k} nranks 8 "
            f"cudaDev {k} nvmlDev {k} busId {k + 1}b000 commId 0x3f2a{i % 65536:04x} - Init COMPLETE\n"
            f"gpu-node-01:{4100 + k}:{5200 + k} [{k}] NCCL INFO ncclCommInitRank comm 0x55d0c8{i % 4096:04x} rank {k} "
            f"nranks 8 cudaDev {k} nvmlDev {k} busId {k + 1}b000 commId 0x3f2a{i % 65536:04x} - Init START\n")


def nccl_net(i: int) -> str:
    k = i % 8
    p = f"gpu-node-01:{4100 + k}:{4100 + k} [{k}]"
    return (f"{p} NCCL INFO Bootstrap : Using eth0:10.0.0.{k + 2}<0>\n"
            f"{p} NCCL INFO NET/Plugin : dlerror=libnccl-net.so: cannot open shared object file: No such file or "
            f"directory No plugin found (libnccl-net.so), using internal implementation\n"
            f"{p} NCCL INFO NET/IB : No device found.\n"
            f"{p} NCCL INFO NET/Socket : Using [0]eth0:10.0.0.{k + 2}<0>\n"
            f"{p} NCCL INFO Using network Socket\n")


def nccl_env(i: int) -> str:
    k = i % 8
    return (f"gpu-node-01:{4100 + k}:{4100 + k} [{k}] NCCL INFO NCCL_IB_DISABLE set by environment to 1.\n"
            f"gpu-node-01:{4100 + k}:{5300 + k} [{k}] NCCL INFO Connected all rings\n"
            f"gpu-node-01:{4100 + k}:{5300 + k} [{k}] NCCL INFO Connected all trees\n")


# --- HF transformers / LLaMA-Factory (trainer.py, llamafactory logging) ---------------------------------------------
def lf_info(i: int) -> str:
    return (f"[INFO|{_t(i)[:19]}] llamafactory.hparams.parser:406 >> Process rank: {i % 8}, world size: 8, device: "
            f"cuda:{i % 8}, distributed training: True, compute dtype: torch.bfloat16\n"
            f"[INFO|{_t(i)[:19]}] llamafactory.hparams.parser:144 >> Set `ddp_find_unused_parameters` to False in "
            f"DDP training since LoRA is enabled.\n")


def lf_warning(i: int) -> str:
    return (f"[WARNING|{_t(i)[:19]}] llamafactory.data.template:149 >> You are using reasoning template, please add "
            f"`_nothink` suffix if the model is not a reasoning model. e.g., qwen3_vl_nothink\n"
            f"[WARNING|{_t(i)[:19]}] llamafactory.hparams.parser:149 >> We recommend enable mixed precision "
            f"training.\n")


def hf_checkpoint(i: int) -> str:
    return (f"[INFO|trainer.py:3815] {_t(i)} >> Saving model checkpoint to saves/qwen3-14b/lora/sft/"
            f"checkpoint-{i * 500}\n[INFO|configuration_utils.py:691] {_t(i)} >> loading configuration file "
            f"config.json from cache at /root/.cache/huggingface/hub/models--Qwen--Qwen3-14B/snapshots/"
            f"{i * 2654435761 % 2**32:08x}/config.json\n")


def hf_loss(i: int) -> str:
    return (f"{{'loss': {1.0 + (i % 17) / 10:.4f}, 'grad_norm': {0.5 + i % 31 / 100:.4f}, 'learning_rate': "
            f"{9.1e-06 - i * 1e-12:.4e}, 'epoch': {i / 30000:.2f}}}\n")


def hf_eval(i: int) -> str:
    return (f"[INFO|trainer.py:4226] {_t(i)} >> \n***** Running Evaluation *****\n"
            f"[INFO|trainer.py:4228] {_t(i)} >>   Num examples = {1000 + i % 7}\n"
            f"[INFO|trainer.py:4231] {_t(i)} >>   Batch size = 8\n"
            f"{{'eval_loss': {1 + i % 997 / 1000:.4f}, 'eval_runtime': {12 + i % 13:.4f}, 'eval_samples_per_second': "
            f"{81 + i % 9:.3f}, 'eval_steps_per_second': {10 + i % 5:.3f}, 'epoch': {i / 3000:.2f}}}\n")


def hf_tokenizer(i: int) -> str:
    # transformers tokenization_utils_base.py
    return (f"Token indices sequence length is longer than the specified maximum sequence length for this model "
            f"({2049 + i % 5000} > 2048). Running this sequence through the model will result in indexing errors\n")


def hf_use_cache(i: int) -> str:
    # transformers modeling_utils / the model's forward under gradient checkpointing (logger.warning_once)
    return "`use_cache=True` is incompatible with gradient checkpointing. Setting `use_cache=False`.\n"


def tqdm_train(i: int) -> str:
    # HF Trainer's tqdm bar, redrawn with "\r", glued to the record that follows it (a loss dict)
    n = i % 30000
    return "".join(f"\r {_bar(s, 30000)}" for s in range(n, n + 6)) + \
        f"\r{_bar(n + 6, 30000)}{{'loss': 0.{i % 9973:04d}, 'grad_norm': 0.8, 'learning_rate': 9e-06, 'epoch': 0.1}}\n"


def datasets_map(i: int) -> str:
    # datasets arrow_dataset.py map/filter bars (unit "examples")
    n = i % 10000
    return ("".join(f"\rRunning tokenizer on dataset (num_proc=16): {_bar(s, 10000, ' examples')}"
                    for s in range(n, n + 5)) + "\n" +
            "".join(f"\rFilter: {_bar(s, 10000, ' examples')}" for s in range(n, n + 3)) + "\n")


def py_warning(i: int) -> str:
    # warnings.showwarning: the path, the category, the message, then the source line
    return (f"/usr/local/lib/python3.11/site-packages/torch/utils/checkpoint.py:{86 + i % 3}: UserWarning: None of "
            f"the inputs have requires_grad=True. Gradients will be None\n  warnings.warn(\n"
            f"/usr/local/lib/python3.11/site-packages/transformers/training_args.py:1568: FutureWarning: "
            f"`evaluation_strategy` is deprecated and will be removed in version 4.46 of 🤗 Transformers. Use "
            f"`eval_strategy` instead\n  warnings.warn(\n")


def accelerate_kernel(i: int) -> str:
    # accelerate/utils/other.py check_os_kernel (logger.warning)
    return (f"{_t(i)[11:]} - WARNING - accelerate.utils.other - Detected kernel version 4.18.0, which is below the "
            f"recommended minimum of 5.5.0; this can cause the process to hang. It is recommended to upgrade the "
            f"kernel to the minimum version or higher.\n")


# --- DeepSpeed (runtime/engine.py, utils/timer.py, runtime/fp16/loss_scaler.py, runtime/utils.py, zero/stage3.py) ---
def ds_step(i: int) -> str:
    return (f"[{_t(i)}] [INFO] [logging.py:128:log_dist] [Rank 0] step={i}, skipped={i % 3}, lr=[{9.1e-06:.6e}], "
            f"mom=[(0.9, 0.999)]\n[{_t(i)}] [INFO] [timer.py:264:stop] epoch=0/micro_step={i * 16}/global_step={i}, "
            f"RunningAvgSamplesPerSec={12 + i % 7 / 10:.4f}, CurrSamplesPerSec={11 + i % 5 / 10:.4f}, "
            f"MemAllocated={14 + i % 3 / 10:.2f}GB, MaxMemAllocated={20 + i % 4 / 10:.2f}GB\n")


def ds_overflow(i: int) -> str:
    return (f"[{_t(i)}] [INFO] [loss_scaler.py:183:update_scale] [deepspeed] OVERFLOW! Rank {i % 8} Skipping step. "
            f"Attempted loss scale: {2 ** (16 - i % 4)}, reducing to {2 ** (15 - i % 4)}\n")


def ds_memory(i: int) -> str:
    t = f"[{_t(i)}] [INFO] [utils.py:"
    return (f"{t}781:see_memory_usage] After forward step {i}\n"
            f"{t}782:see_memory_usage] MA {12 + i % 7 / 10:.2f} GB         Max_MA {14 + i % 3 / 10:.2f} GB         "
            f"CA {15 + i % 5 / 10:.2f} GB         Max_CA 16 GB \n"
            f"{t}789:see_memory_usage] CPU Virtual Memory:  used = {47 + i % 11 / 10:.2f} GB, percent = "
            f"{9 + i % 4 / 10:.1f}%\n")


def ds_cache_flush(i: int) -> str:
    # zero/stage3.py: "memory pressure" in a warning, every step under pressure
    return (f"[{_t(i)}] [WARNING] [stage3.py:2069:step] {1 + i % 5} pytorch allocator cache flushes since last step. "
            f"this happens when there is high memory pressure and is detrimental to performance. if this is happening "
            f"frequently consider adjusting settings to reduce memory consumption. If you are unable to make the cache "
            f"flushes go away consider adding get_accelerator().empty_cache() calls in your training loop to ensure "
            f"that all ranks flush their caches at the same time\n")


# --- Megatron-LM (megatron/training/training.py training_log) -------------------------------------------------------
def megatron_iter(i: int) -> str:
    return (f" [{_t(i)[:19]}] iteration {i:8d}/  500000 | consumed samples: {i * 512:12d} | elapsed time per "
            f"iteration (ms): {1234 + i % 97:.1f} | learning rate: {1.5e-4:.6E} | global batch size:   512 | lm loss: "
            f"{7 - i % 50 / 10:.6E} | loss scale: 65536.0 | grad norm: {1 + i % 9 / 10:.3f} | number of skipped "
            f"iterations:   0 | number of nan iterations:   0 |\n")


# --- PyTorch Lightning (progress/tqdm_progress.py, utilities/rank_zero.py) ------------------------------------------
def lightning_bar(i: int) -> str:
    n = i % 1000
    return "".join(f"\rEpoch {i // 1000}: {_bar(s, 1000)[:-1]}, v_num=0, train_loss={0.5 + s % 9 / 100:.3f}]"
                   for s in range(n, n + 4)) + "\n"


def lightning_info(i: int) -> str:
    return (f"LOCAL_RANK: {i % 8} - CUDA_VISIBLE_DEVICES: [0,1,2,3,4,5,6,7]\n"
            f"Initializing distributed: GLOBAL_RANK: {i % 8}, MEMBER: {i % 8 + 1}/8\n")


# --- Ray / verl (verl/utils/tracking.py console logger, Ray log monitor prefix) --------------------------------------
def verl_metrics(i: int) -> str:
    return (f"(TaskRunner pid={40000 + i % 997}) step:{i} - global_seqlen/mean:{61234 + i % 999} - actor/entropy:"
            f"{0.5 + i % 9 / 100:.3f} - actor/pg_loss:{-0.003 + i % 7 / 1000:.4f} - actor/kl_loss:0.001 - "
            f"actor/grad_norm:{0.2 + i % 5 / 10:.3f} - critic/score/mean:{0.45 + i % 11 / 100:.3f} - "
            f"response_length/mean:{512 + i % 300:.1f} - timing_s/gen:{12 + i % 5:.3f} - timing_s/update_actor:"
            f"{8 + i % 3:.3f} - perf/throughput:{1234 + i % 77:.2f}\n")


def ray_info(i: int) -> str:
    return (f"{_t(i)}\tINFO worker.py:1841 -- Started a local Ray instance. View the dashboard at "
            f"\x1b[1m\x1b[32m127.0.0.1:8265 \x1b[39m\x1b[22m\n"
            f"(WorkerDict pid={50000 + i % 997}, ip=10.1.2.{i % 250}) kwargs: {{'n': 1, 'logprobs': 0, 'max_tokens': "
            f"1024, 'detokenize': False, 'temperature': 1.0}} [repeated 7x across cluster]\n")


# --- vLLM (vllm/engine/metrics.py, v1 loggers) ----------------------------------------------------------------------
def vllm_info(i: int) -> str:
    return (f"INFO {_t(i)[5:10]} {_t(i)[11:19]} [metrics.py:455] Avg prompt throughput: {i % 500:.1f} tokens/s, Avg "
            f"generation throughput: {1234 + i % 99:.1f} tokens/s, Running: {i % 64} reqs, Swapped: 0 reqs, Pending: "
            f"0 reqs, GPU KV cache usage: {i % 100:.1f}%, CPU KV cache usage: 0.0%.\n")


KINDS: dict[str, Callable[[int], str]] = {f.__name__: f for f in (
    c10d_barrier, c10d_not_destroyed, c10d_env_deprecated, ddp_reducer, elastic_omp, elastic_info,
    nccl_channel, nccl_init, nccl_net, nccl_env,
    lf_info, lf_warning, hf_checkpoint, hf_loss, hf_eval, hf_tokenizer, hf_use_cache, tqdm_train, datasets_map,
    py_warning, accelerate_kernel,
    ds_step, ds_overflow, ds_memory, ds_cache_flush,
    megatron_iter, lightning_bar, lightning_info, verl_metrics, ray_info, vllm_info,
)}
