"""More ordinary line kinds for the mixture benchmark (`mixtures.py --set more`): 40 kinds that line_kinds.py does not
hold, none of which means the run failed.

Collected by a separate session (issue 16) from the producers' source and from real logs, to measure the reader on
line kinds its author had not tuned for: the comment above each kind names the producer. Same shape as
line_kinds.KINDS: name -> f(i) -> one or more lines ending in "\n" (tqdm redraws with "\r"); numbers vary with i.
Several are hostile-but-ordinary: "timeout", "exit", "OOMs: 0", "memory", "stopped" as their producers print them in
healthy runs.
"""
from __future__ import annotations

from collections.abc import Callable

from line_kinds import _bar  # (the same tqdm bar)


def _t(i: int) -> str:
    return f"2026-11-28 {10 + i // 3600 % 12:02d}:{i // 60 % 60:02d}:{i % 60:02d},{i * 37 % 1000:03d}"


def _g(i: int) -> str:
    """glog time: MMDD HH:MM:SS.micro (c10/util/Logging.cpp; torch >= 2.4 prints nanoseconds)"""
    return f"1128 {10 + i // 3600 % 12:02d}:{i // 60 % 60:02d}:{i % 60:02d}.{i * 7919 % 10**9:09d}"


# --- PyTorch Lightning ------------------------------------------------------------------------------------------------
def lightning_devices(i: int) -> str:
    # lightning/pytorch/trainer/setup.py _log_device_info (rank_zero_info); seen in many public logs
    return ("GPU available: True (cuda), used: True\n"
            "TPU available: False, using: 0 TPU cores\n"
            "HPU available: False, using: 0 HPUs\n"
            f"[rank: {i % 8}] Seed set to {i % 1000}\n")


def lightning_model_summary(i: int) -> str:
    # lightning/pytorch/utilities/model_summary/model_summary.py summarize() table (ModelSummary callback)
    p = 100 + i % 900
    return ("  | Name      | Type             | Params | Mode \n"
            "-------------------------------------------------------\n"
            f"0 | model     | LlamaForCausalLM | {p / 100:.1f} B  | train\n"
            "1 | criterion | CrossEntropyLoss | 0      | train\n"
            "-------------------------------------------------------\n"
            f"{p / 100:.1f} B     Trainable params\n"
            "0         Non-trainable params\n"
            f"{p / 100:.1f} B     Total params\n"
            f"{p * 40:,.3f}    Total estimated model params size (MB)\n")


def lightning_fit_stopped(i: int) -> str:
    # lightning/pytorch/loops/fit_loop.py done property: rank_zero_info("`Trainer.fit` stopped: ...") and the
    # Sanity Checking bar of progress/tqdm_progress.py; ordinary end of a fit() call (e.g. one run of a sweep)
    return (f"\rSanity Checking DataLoader 0: 100%|██████████| 2/2 [00:0{i % 10}<00:00,  {3 + i % 5}.12it/s]\n"
            f"`Trainer.fit` stopped: `max_epochs={1 + i % 9}` reached.\n")


# --- Weights & Biases (wandb/sdk/wandb_run.py header/footer) ----------------------------------------------------------
def wandb_header(i: int) -> str:
    # wandb/sdk/wandb_run.py _header_* (wording from public logs, wandb 0.16-0.19)
    rid = f"{i * 2654435761 % 36**8:08x}"[:8]
    return ("wandb: Currently logged in as: team-ml. Use `wandb login --relogin` to force relogin\n"
            f"wandb: Tracking run with wandb version 0.19.{i % 12}\n"
            f"wandb: Run data is saved locally in /workspace/wandb/run-20261128_{i % 240000:06d}-{rid}\n"
            "wandb: Run `wandb offline` to turn off syncing.\n"
            f"wandb: Syncing run qwen3-sft-{i % 997}\n"
            "wandb: ⭐️ View project at https://wandb.ai/team-ml/llm-sft\n"
            f"wandb: 🚀 View run at https://wandb.ai/team-ml/llm-sft/runs/{rid}\n")


def wandb_history(i: int) -> str:
    # wandb/sdk/wandb_run.py _footer_history/_footer_summary: sparkline table at wandb.finish (a previous run
    # in the same log, or a sweep); metric names as the HF WandbCallback logs them
    sp = "▁▂▃▄▅▆▇█"
    line = "".join(sp[(i + k) * 7 % 8] for k in range(20))
    return ("wandb:                                                                                \n"
            "wandb: \n"
            "wandb: Run history:\n"
            f"wandb:               eval/loss {line[:6]}\n"
            f"wandb:         eval/error_rate {line[3:9]}\n"
            f"wandb:             train/epoch {line}\n"
            f"wandb:         train/grad_norm {line[::-1]}\n"
            f"wandb:              train/loss {line[5:]}\n"
            "wandb: \n"
            "wandb: Run summary:\n"
            f"wandb:               eval/loss {1 + i % 997 / 1000:.5f}\n"
            f"wandb:         eval/error_rate {i % 100 / 1000:.5f}\n"
            f"wandb:              train/loss {0.8 + i % 313 / 1000:.5f}\n"
            "wandb: \n"
            f"wandb: 🚀 View run qwen3-sft-{i % 997} at: https://wandb.ai/team-ml/llm-sft/runs/ab{i % 9973:04d}cd\n")


# --- torch elastic (torch/distributed/launcher/api.py, elastic/agent/server/api.py) ----------------------------------
def elastic_launch_configs(i: int) -> str:
    # torch/distributed/launcher/api.py launch_agent: logger.info("Starting elastic_operator with launch configs:...")
    return ("INFO:torch.distributed.launcher.api:Starting elastic_operator with launch configs:\n"
            "  entrypoint       : src/train.py\n"
            "  min_nodes        : 1\n"
            "  max_nodes        : 1\n"
            "  nproc_per_node   : 8\n"
            "  run_id           : none\n"
            "  rdzv_backend     : static\n"
            f"  rdzv_endpoint    : 127.0.0.1:{29500 + i % 100}\n"
            f"  rdzv_configs     : {{'rank': 0, 'timeout': 900}}\n"
            "  max_restarts     : 0\n"
            "  monitor_interval : 5\n"
            "  log_dir          : None\n"
            "  metrics_cfg      : {}\n\n")


def elastic_rendezvous(i: int) -> str:
    # torch/distributed/elastic/agent/server/api.py _rendezvous: "[%(role)s] Rendezvous complete for workers. Result:"
    return ("INFO:torch.distributed.elastic.agent.server.api:[default] Rendezvous complete for workers. Result:\n"
            "  restart_count=0\n"
            f"  master_addr=gpu-node-{i % 64:02d}\n"
            f"  master_port={40000 + i % 20000}\n"
            "  group_rank=0\n"
            "  group_world_size=1\n"
            "  local_ranks=[0, 1, 2, 3, 4, 5, 6, 7]\n"
            "  role_ranks=[0, 1, 2, 3, 4, 5, 6, 7]\n"
            "  global_ranks=[0, 1, 2, 3, 4, 5, 6, 7]\n"
            "  role_world_sizes=[8, 8, 8, 8, 8, 8, 8, 8]\n"
            "  global_world_sizes=[8, 8, 8, 8, 8, 8, 8, 8]\n\n")


def c10d_ipv6_probe(i: int) -> str:
    # torch/csrc/distributed/c10d/socket.cpp: benign IPv6 probe on hosts without IPv6 (errno 97, not 98); a glog W line
    r = i % 8
    return (f"[rank{r}]:[W{_g(i)} socket.cpp:767] [c10d] The client socket cannot be initialized to connect to "
            f"[localhost]:{29500 + i % 100} (errno: 97 - Address family not supported by protocol).\n")


# --- torch.compile (torch/_dynamo/convert_frame.py, torch/_inductor/utils.py) -----------------------------------------
def dynamo_recompile(i: int) -> str:
    # torch/_dynamo/convert_frame.py: cache-size-limit warning (torch._logging glog format, [frame/compile] prefix)
    h = f"W{_g(i)[:-3]} {3000 + i % 97} torch/_dynamo/convert_frame.py:844]"
    return (f"[rank{i % 8}]:{h} [0/8] torch._dynamo hit config.cache_size_limit (8)\n"
            f"[rank{i % 8}]:{h} [0/8]    function: 'forward' (/workspace/model.py:{52 + i % 40})\n"
            f"[rank{i % 8}]:{h} [0/8]    last reason: 0/0: tensor 'L['input_ids']' size mismatch at index 1. "
            f"expected {384 + i % 128}, actual {512 + i % 256}\n"
            f"[rank{i % 8}]:{h} [0/8] To log all recompilation reasons, use TORCH_LOGS=\"recompiles\".\n")


def inductor_small_gpu(i: int) -> str:
    # torch/_inductor/utils.py is_big_gpu: log.warning("Not enough SMs to use max_autotune_gemm mode"), seen in vLLM
    # v1 logs with the EngineCore prefix
    return (f"(EngineCore_DP0 pid={100 + i % 900}) [rank0]:W{_g(i)[:-3]} {100 + i % 900} "
            f"torch/_inductor/utils.py:1703] Not enough SMs to use max_autotune_gemm mode\n")


def torch_memory_summary(i: int) -> str:
    # torch/cuda/memory.py memory_summary(): a state print (here every N steps by user code), not an OOM: "CUDA OOMs: 0"
    a = 15000 + i % 900
    return ("|===========================================================================|\n"
            f"|                  PyTorch CUDA memory summary, device ID {i % 8}                 |\n"
            "|---------------------------------------------------------------------------|\n"
            "|            CUDA OOMs: 0            |        cudaMalloc retries: 0         |\n"
            "|===========================================================================|\n"
            "|        Metric         | Cur Usage  | Peak Usage | Tot Alloc  | Tot Freed  |\n"
            "|---------------------------------------------------------------------------|\n"
            f"| Allocated memory      | {a:7d} MB | {a + 8:7d} MB | {a * 3:7d} MB | {a * 2:7d} MB |\n"
            f"|       from large pool | {a - 4:7d} MB | {a + 4:7d} MB | {a * 3 - 10:7d} MB | {a * 2 - 6:7d} MB |\n"
            "|       from small pool |       4 MB |       4 MB |      10 MB |       6 MB |\n"
            "|---------------------------------------------------------------------------|\n"
            f"| Allocations           | {700 + i % 99:7d}    | {800 + i % 99:7d}    | {33000 + i % 999:7d}    | "
            f"{32000 + i % 999:7d}    |\n"
            "|===========================================================================|\n")


# --- NCCL (src/init.cc, graph/*.cc, transport/nvls.cc with NCCL_DEBUG=INFO) ------------------------------------------
def nccl_affinity_nvls(i: int) -> str:
    # src/init.cc / transport/nvls.cc (wording from public NCCL_DEBUG=INFO logs, NCCL 2.19-2.23)
    k = i % 8
    p = f"gpu-node-02:{6100 + k}:{6900 + k} [{k}]"
    return (f"{p} NCCL INFO Setting affinity for GPU {k} to ffff0000,00000000,ffff0000,00000000\n"
            f"{p} NCCL INFO NVLS multicast support is not available on dev {k}\n"
            f"{p} NCCL INFO comm 0x4b8e{i % 65536:04x} rank {k} nRanks 8 nNodes 1 localRanks 8 localRank {k} "
            f"MNNVL 0\n")


def nccl_version_env(i: int) -> str:
    # src/init.cc showVersion / env parsing (ncclGetEnv "set by environment to"): a timeout *setting*, not a timeout
    k = i % 8
    p = f"gpu-node-02:{6100 + k}:{6100 + k} [{k}]"
    return (f"{p} NCCL INFO cudaDriverVersion 12040\n"
            f"{p} NCCL INFO NCCL version 2.21.5+cuda12.4\n"
            f"{p} NCCL INFO NCCL_IB_TIMEOUT set by environment to 22.\n"
            f"{p} NCCL INFO NCCL_IB_RETRY_CNT set by environment to 7.\n"
            f"{p} NCCL INFO Bootstrap timings total 0.{730364 + i % 9999} (create 0.000079, send 0.000147, "
            f"recv 0.000953, ring 0.727395, delay 0.000000)\n")


def nccl_topology(i: int) -> str:
    # src/graph/connect.cc, src/init.cc (Trees/Channel/threadThresholds/coll channels lines)
    k = i % 8
    p = f"gpu-node-02:{6100 + k}:{6900 + k} [{k}]"
    return (f"{p} NCCL INFO Channel {i % 24:02d}/24 :    0   1   2   3   4   5   6   7\n"
            f"{p} NCCL INFO Trees [0] {(k + 1) % 8}/-1/-1->{k}->{(k + 7) % 8} [1] {(k + 1) % 8}/-1/-1->{k}->"
            f"{(k + 7) % 8}\n"
            f"{p} NCCL INFO P2P Chunksize set to 524288\n"
            f"{p} NCCL INFO Ring {i % 24:02d} : {k}[{k}] -> {(k + 1) % 8}[{(k + 1) % 8}] via P2P/CUMEM\n"
            f"{p} NCCL INFO threadThresholds 8/8/64 | 64/8/64 | 512 | 512\n"
            f"{p} NCCL INFO 24 coll channels, 24 collnet channels, 0 nvls channels, 32 p2p channels, 32 p2p channels "
            f"per peer\n")


def nccl_destroy(i: int) -> str:
    # src/init.cc commDestroy/ncclCommDestroy: normal teardown of a sub-communicator (not "Abort COMPLETE")
    k = i % 8
    return (f"gpu-node-02:{6100 + k}:{6100 + k} [{k}] NCCL INFO comm 0x55d0c8{i % 4096:04x} rank {k} nranks 8 "
            f"cudaDev {k} busId {k + 1}b000 - Destroy COMPLETE\n")


# --- DeepSpeed (launcher/runner.py, launcher/launch.py, runtime/engine.py, runtime/config.py, ops/adam/cpu_adam.py) --
def ds_launcher(i: int) -> str:
    # deepspeed/launcher/runner.py fetch_hostfile + launcher/launch.py main (wording from corpus logs)
    t = f"[{_t(i)}]"
    return (f"{t} [WARNING] [runner.py:202:fetch_hostfile] Unable to find hostfile, will proceed with training with "
            f"local resources only.\n"
            f"{t} [INFO] [launch.py:146:main] WORLD INFO DICT: {{'localhost': [0, 1, 2, 3, 4, 5, 6, 7]}}\n"
            f"{t} [INFO] [launch.py:152:main] nnodes=1, num_local_procs=8, node_rank=0\n"
            f"{t} [INFO] [launch.py:163:main] global_rank_mapping=defaultdict(<class 'list'>, {{'localhost': "
            f"[0, 1, 2, 3, 4, 5, 6, 7]}})\n"
            f"{t} [INFO] [launch.py:164:main] dist_world_size=8\n"
            f"{t} [INFO] [launch.py:168:main] Setting CUDA_VISIBLE_DEVICES=0,1,2,3,4,5,6,7\n")


def ds_engine_init(i: int) -> str:
    # deepspeed/runtime/engine.py _configure_optimizer / _configure_lr_scheduler log_dist (ranks=[0])
    t = f"[{_t(i)}] [INFO] [logging.py:107:log_dist] [Rank 0]"
    return (f"{t} DeepSpeed Basic Optimizer = AdamW\n"
            f"{t} DeepSpeed Final Optimizer = DeepSpeedZeroOptimizer_Stage3\n"
            f"{t} DeepSpeed using configured LR scheduler = None\n"
            f"{t} DeepSpeed LR Scheduler = None\n")


def ds_config_print(i: int) -> str:
    # deepspeed/runtime/config.py DeepSpeedConfig.print: "  {arg} {dots} {value}" for every attribute
    t = f"[{_t(i)}] [INFO] [config.py:1003:print]  "
    rows = [("checkpoint_tag_validation_enabled", "True"), ("checkpoint_tag_validation_fail", "False"),
            ("dump_state", "False"), ("elasticity_enabled", "False"), ("eigenvalue_max_iter", "100"),
            ("fp16_auto_cast", "None"), ("gradient_clipping", "1.0"), ("steps_per_print", "inf"),
            ("wall_clock_breakdown", "False"), ("zero_allow_untested_optimizer", "False"),
            ("zero_optimization_stage", "3")]
    a, v = rows[i % len(rows)]
    b, w = rows[(i + 5) % len(rows)]
    return f"{t} {a} {'.' * max(1, 29 - len(a))} {v}\n{t} {b} {'.' * max(1, 29 - len(b))} {w}\n"


def ds_cpu_adam(i: int) -> str:
    # deepspeed/ops/op_builder/builder.py jit_load ("Time to load cpu_adam op", corpus log) and
    # deepspeed/ops/adam/cpu_adam.py (csrc adam: "Adam Optimizer #0 is created with AVX512 arithmetic capability.")
    return ("Loading extension module cpu_adam...\n"
            f"Time to load cpu_adam op: {2 + i % 30}.{i % 99991:05d} seconds\n"
            f"Adam Optimizer #{i % 4} is created with AVX512 arithmetic capability.\n"
            "Config: alpha=0.000020, betas=(0.900000, 0.999000), weight_decay=0.010000, adam_w=1\n")


def ds_exit_ok(i: int) -> str:
    # deepspeed/launcher/launch.py main loop: logger.info(f"Process {process.pid} exits successfully.")
    # (one job of a multi-job log finished normally; "exits" in an ordinary sense)
    return f"[{_t(i)}] [INFO] [launch.py:351:main] Process {20000 + i % 30000} exits successfully.\n"


# --- Megatron-LM (megatron/training/training.py, core/timers.py, training/utils.py report_memory) --------------------
def megatron_setup(i: int) -> str:
    # megatron/training/training.py build_train_valid_test_data_loaders / print_datetime; rerun_state_machine.py
    return (f"[after model, optimizer, and learning rate scheduler are built] datetime: 2026-11-28 "
            f"{10 + i % 12:02d}:{i % 60:02d}:{i * 7 % 60:02d} \n"
            "> building train, validation, and test datasets ...\n"
            " > datasets target sizes (minimum size):\n"
            f"    train:      {10000 + i % 9999}\n"
            "    validation: 120\n"
            "    test:       20\n"
            "> building train, validation, and test datasets for GPT ...\n"
            "> finished creating GPT datasets ...\n"
            "Setting rerun_state_machine.current_iteration to 0...\n")


def megatron_timers(i: int) -> str:
    # megatron/core/timers.py _get_global_min_max_time_string: name.ljust(48, '.')
    def row(name: str, a: float) -> str:
        return f"    {(name + ' ').ljust(48, '.')}: ({a:.2f}, {a + i % 7 / 10:.2f})\n"
    return ("(min, max) time across ranks (ms):\n" + row("forward-backward", 26094 + i % 999) +
            row("optimizer", 3407 + i % 99) + row("batch-generator", 1 + i % 9))


def megatron_memory(i: int) -> str:
    # megatron/training/utils.py report_memory: "[Rank r] (after N iterations) memory (MB) | allocated: ..."
    return (f"[Rank {i % 8}] (after {i} iterations) memory (MB) | allocated: {1894 + i % 999}.57666015625 | "
            f"max allocated: {9752 + i % 999}.35498046875 | reserved: {11342 + i % 99}.0 | max reserved: "
            f"{11342 + i % 99}.0\n")


# --- HF transformers / LLaMA-Factory / peft / accelerate ------------------------------------------------------------
def hf_running_training(i: int) -> str:
    # transformers/trainer.py _inner_training_loop (corpus genuine_lf logs, LF logging format)
    t = f"[INFO|trainer.py:2519] {_t(i)} >>"
    return (f"{t} ***** Running training *****\n"
            f"{t}   Num examples = {50000 + i % 9999:,}\n"
            f"{t}   Num Epochs = 3\n"
            f"{t}   Instantaneous batch size per device = 1\n"
            f"{t}   Total train batch size (w. parallel, distributed & accumulation) = 128\n"
            f"{t}   Gradient Accumulation steps = 16\n"
            f"{t}   Total optimization steps = {1170 + i % 99:,}\n"
            f"{t}   Number of trainable parameters = {20185088 + i % 999:,}\n")


def hf_train_metrics(i: int) -> str:
    # transformers/trainer.py (train end: "Training completed...", metrics dict) and trainer_pt_utils.log_metrics
    # (corpus genuine_lf logs); a previous stage of a multi-stage script
    return ("\n\nTraining completed. Do not forget to share your model on huggingface.co/models =)\n\n\n"
            f"{{'train_runtime': {3050 + i % 999}.3713, 'train_samples_per_second': {6 + i % 9}.003, "
            f"'train_steps_per_second': 0.376, 'train_loss': {1 + i % 97 / 100:.4f}, 'epoch': 3.0}}\n"
            "***** train metrics *****\n"
            "  epoch                    =        3.0\n"
            f"  total_flos               = {1000 + i % 9000}GF\n"
            f"  train_loss               =     {1 + i % 97 / 100:.4f}\n"
            f"  train_runtime            = 0:{i % 60:02d}:{i * 7 % 60:02d}.37\n"
            f"  train_samples_per_second =      {6 + i % 9}.003\n"
            "  train_steps_per_second   =      0.376\n")


def hf_modelcard_drop(i: int) -> str:
    # transformers/modelcard.py TrainingSummary.from_trainer via trainer.create_model_card (corpus genuine_lf logs)
    return (f"[INFO|modelcard.py:450] {_t(i)} >> Dropping the following result as it does not have all the "
            f"necessary fields:\n{{'task': {{'name': 'Causal Language Modeling', 'type': 'text-generation'}}}}\n")


def hf_model_config(i: int) -> str:
    # transformers/configuration_utils.py from_pretrained (logger.info "Model config %s") (corpus genuine_lf logs)
    return (f"[INFO|configuration_utils.py:763] {_t(i)} >> loading configuration file models/qwen3-8b/config.json\n"
            f"[INFO|configuration_utils.py:839] {_t(i)} >> Model config Qwen3Config {{\n"
            '  "architectures": [\n    "Qwen3ForCausalLM"\n  ],\n'
            '  "attention_dropout": 0.0,\n  "hidden_act": "silu",\n'
            f'  "hidden_size": {4096 + (i % 2) * 1024},\n'
            '  "max_position_embeddings": 40960,\n  "model_type": "qwen3",\n'
            '  "use_cache": true,\n  "vocab_size": 151936\n}\n\n')


def hf_newly_initialized(i: int) -> str:
    # transformers/modeling_utils.py _load_pretrained_model: logger.warning for missing keys (a reward/cls head)
    return (f"Some weights of Qwen3ForSequenceClassification were not initialized from the model checkpoint at "
            f"models/qwen3-{1 + i % 8}b and are newly initialized: ['score.weight']\n"
            "You should probably TRAIN this model on a down-stream task to be able to use it for predictions and "
            "inference.\n")


def hf_loading_shards(i: int) -> str:
    # transformers/modeling_utils.py: logging.tqdm(desc="Loading checkpoint shards") redrawn with "\r"
    n = 4 + i % 5
    return "".join(f"\rLoading checkpoint shards: {_bar(s, n)}" for s in range(0, n + 1)) + "\n"


def lf_model_setup(i: int) -> str:
    # llamafactory model/loader.py, model/adapter.py, model/model_utils/*.py (corpus genuine_lf logs)
    t = f"[INFO|{_t(i)[:19]}]"
    return (f"{t} llamafactory.model.model_utils.checkpointing:143 >> Gradient checkpointing enabled.\n"
            f"{t} llamafactory.model.model_utils.attention:143 >> Using torch SDPA for faster training and "
            f"inference.\n"
            f"{t} llamafactory.model.adapter:143 >> Upcasting trainable params to float32.\n"
            f"{t} llamafactory.model.adapter:143 >> Fine-tuning method: LoRA\n"
            f"{t} llamafactory.model.loader:143 >> trainable params: {20185088 + i % 999:,} || all params: "
            f"{8211000000 + i % 99999:,} || trainable%: 0.2458\n")


def peft_trainable(i: int) -> str:
    # peft/peft_model.py print_trainable_parameters (print)
    return (f"trainable params: {4194304 * (1 + i % 8):,} || all params: {6742609920 + i % 9999:,} || "
            f"trainable%: {0.0622 * (1 + i % 8):.4f}\n")


def accelerate_defaults(i: int) -> str:
    # accelerate/commands/launch.py _validate_launch_command: logger.warning(message) with tab-indented items
    return ("The following values were not passed to `accelerate launch` and had defaults used instead:\n"
            f"\t`--num_processes` was set to a value of `{1 + i % 8}`\n"
            "\t\tMore than one GPU was found, enabling multi-GPU training.\n"
            "\t\tIf this was unintended please pass in `--num_processes=1`.\n"
            "\t`--num_machines` was set to a value of `1`\n"
            "\t`--mixed_precision` was set to a value of `'no'`\n"
            "\t`--dynamo_backend` was set to a value of `'no'`\n"
            "To avoid this warning pass in values for each of the problematic parameters or run `accelerate "
            "config`.\n")


# --- other trainers: torchtitan, detectron2, torchvision reference, yolov5 ------------------------------------------
def titan_step(i: int) -> str:
    # torchtitan components/metrics.py MetricsProcessor.log: coloured (ANSI) step line with "memory:"
    return (f"[titan] {_t(i)} - root - INFO - \x1b[31mstep: {i:2}  \x1b[32mloss: {2 + i % 997 / 1000:8.5f}  "
            f"\x1b[33mgrad_norm: {0.3 + i % 77 / 100:7.4f}  \x1b[36mmemory: {40 + i % 30 / 7:5.2f}GiB"
            f"({50 + i % 40 / 3:.2f}%)  \x1b[34mtps: {6789 + i % 999:,}  \x1b[36mtflops: {312 + i % 50 / 3:,.2f}  "
            f"\x1b[35mmfu: {31 + i % 9 / 7:.2f}%\x1b[39m\n")


def d2_events(i: int) -> str:
    # detectron2/utils/events.py CommonMetricPrinter.write (d2.utils.events logger)
    return (f"[11/28 {10 + i % 12:02d}:{i % 60:02d}:{i * 7 % 60:02d} d2.utils.events]:  eta: 0:{i % 60:02d}:14  "
            f"iter: {i * 20 + 19}  total_loss: {1 + i % 997 / 1000:.3f}  loss_cls: 0.{i % 9973:04d}  "
            f"loss_box_reg: 0.4565  loss_rpn_cls: 0.02201  loss_rpn_loc: 0.06911  time: 0.8241  data_time: 0.0222  "
            f"lr: 0.00033966  max_mem: {18000 + i % 999}M\n")


def torchvision_meter(i: int) -> str:
    # pytorch/examples imagenet/main.py ProgressMeter.display (corpus log 2xx): tab-separated
    return (f"Epoch: [{i // 1563}][{i % 1563:4d}/1563]\tTime  3.{i % 1000:03d} ( 4.464)\tData  0.068 ( 0.095)\t"
            f"Loss 4.{i % 9999:04d}e+00 (5.2487e+00)\tAcc@1   3.12 (  2.27)\tAcc@5   6.25 (  9.22)\n")


def yolov5_row(i: int) -> str:
    # ultralytics yolov5 train.py pbar.set_description (corpus log): gpu_mem column then tqdm bar
    n = i % 836
    return (f"   {i % 300:3d}/299     5.54G   0.0{2700 + i % 99}  0.00{8700 + i % 99}         0   "
            f"0.0{3500 + i % 99}         9       640: {_bar(n, 836)}\n")


# --- serving engines in RL loops: vLLM v1, sglang ---------------------------------------------------------------------
def vllm_engine_ready(i: int) -> str:
    # vllm/v1/core/kv_cache_utils.py, v1/worker/gpu_model_runner.py, v1/engine/core.py; vLLM v1 colours the
    # process prefix (vllm/utils: "\x1b[1;36m(EngineCore_DP0 pid=...)\x1b[0;0m")
    p = f"\x1b[1;36m(EngineCore_DP0 pid={100 + i % 900})\x1b[0;0m INFO {_t(i)[5:10]} {_t(i)[11:19]}"
    return (f"{p} [gpu_model_runner.py:1770] Model loading took {14 + i % 9}.99 GiB and {3 + i % 7}.52 seconds\n"
            f"{p} [kv_cache_utils.py:829] GPU KV cache size: {2182642 + i % 99999:,} tokens\n"
            f"{p} [kv_cache_utils.py:833] Maximum concurrency for 32,768 tokens per request: {29 + i % 9}.06x\n"
            f"{p} [core.py:193] init engine (profile, create kv cache, warmup model) took {40 + i % 20}.12 seconds\n")


def sglang_batch(i: int) -> str:
    # sglang/srt/managers/scheduler.py log_prefill_stats / log_decode_stats
    t = f"[2026-11-28 {10 + i % 12:02d}:{i % 60:02d}:{i * 7 % 60:02d} TP{i % 8}]"
    return (f"{t} Prefill batch. #new-seq: 1, #new-token: {2192 + i % 999}, #cached-token: 35, token usage: 0.0{i % 10}, "
            f"#running-req: {i % 64}, #queue-req: 0\n"
            f"{t} Decode batch. #running-req: {1 + i % 64}, #token: {2266 + i % 9999}, token usage: 0.{i % 90 + 10}, "
            f"cuda graph: True, gen throughput (token/s): {75 + i % 4000}.25, #queue-req: 0\n")


# --- cluster tooling: slurm, nvidia-smi -------------------------------------------------------------------------------
def slurm_srun(i: int) -> str:
    # slurm src/srun/allocate.c / salloc (wording from public logs)
    j = 4901 + i % 90000
    return (f"srun: job {j} queued and waiting for resources\n"
            f"srun: job {j} has been allocated resources\n")


def nvidia_smi(i: int) -> str:
    # nvidia-smi default output (a watch loop or the job prolog), two GPUs rows; memory near capacity is ordinary
    k = i % 8
    return ("+-----------------------------------------------------------------------------------------+\n"
            "| GPU  Name                 Persistence-M | Bus-Id          Disp.A | Volatile Uncorr. ECC |\n"
            "| Fan  Temp   Perf          Pwr:Usage/Cap |           Memory-Usage | GPU-Util  Compute M. |\n"
            "|=========================================+========================+======================|\n"
            f"|   {k}  NVIDIA H100 80GB HBM3          On  |   00000000:{18 + k:02d}:00.0 Off |                    0 |\n"
            f"| N/A   {30 + i % 40}C    P0            {100 + i % 500}W /  700W |   {60000 + i % 20000}MiB /  81559MiB |"
            f"     {i % 100:2d}%      Default |\n"
            "+-----------------------------------------+------------------------+----------------------+\n")


KINDS: dict[str, Callable[[int], str]] = {f.__name__: f for f in (
    lightning_devices, lightning_model_summary, lightning_fit_stopped,
    wandb_header, wandb_history,
    elastic_launch_configs, elastic_rendezvous, c10d_ipv6_probe,
    dynamo_recompile, inductor_small_gpu, torch_memory_summary,
    nccl_affinity_nvls, nccl_version_env, nccl_topology, nccl_destroy,
    ds_launcher, ds_engine_init, ds_config_print, ds_cpu_adam, ds_exit_ok,
    megatron_setup, megatron_timers, megatron_memory,
    hf_running_training, hf_train_metrics, hf_modelcard_drop, hf_model_config, hf_newly_initialized,
    hf_loading_shards, lf_model_setup, peft_trainable, accelerate_defaults,
    titan_step, d2_events, torchvision_meter, yolov5_row,
    vllm_engine_ready, sglang_batch, slurm_srun, nvidia_smi,
)}
