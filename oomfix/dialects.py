"""Canonical names for memory-relevant settings, and each framework's spelling of them.

Rules speak canonical names (`micro_batch`, `grad_accum`, ...); a dialect maps them to the keys of one
framework. Sources: ../shared/corpus/configs/KEYS.md (file:line for every key).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

CANONICAL = {
    "micro_batch": "per-device micro batch",
    "grad_accum": "gradient accumulation steps",
    "global_batch": "global batch (where the framework has a key for it)",
    "eval_batch": "per-device eval batch",
    "seq_len": "sequence length",
    "grad_checkpointing": "gradient / activation checkpointing (true = on)",
    "zero_config": "path of the DeepSpeed config",
    "zero_stage": "ZeRO stage (inside a DeepSpeed JSON)",
    "offload": "ZeRO optimizer offload device (inside a DeepSpeed JSON)",
    "preprocessing_workers": "dataset preprocessing processes",
    "dataloader_workers": "dataloader worker processes",
    "optimizer": "optimizer name",
    "quantization_bit": "quantization bits",
    "lora_rank": "LoRA rank",
    "fp16": "fp16 mixed precision",
    "bf16": "bf16 mixed precision",
    "ddp_timeout": "distributed timeout (seconds)",
}

# keys that must agree between siblings (when world sizes agree); used by check and apply
MEMORY_KEYS = ("micro_batch", "grad_accum", "eval_batch", "seq_len", "grad_checkpointing", "zero_config",
               "preprocessing_workers", "dataloader_workers", "optimizer", "quantization_bit", "lora_rank")


@dataclass(frozen=True)
class Dialect:
    name: str
    keys: Mapping[str, tuple[str, ...]]  # canonical -> key path in the config
    defaults: Mapping[str, Any] = field(default_factory=dict)
    inverted: frozenset[str] = frozenset()  # canonical booleans stored negated (LLaMA-Factory's disable_*)

    def path(self, canonical: str) -> tuple[str, ...] | None:
        return self.keys.get(canonical)


_HF_KEYS = {
    "micro_batch": ("per_device_train_batch_size",),
    "grad_accum": ("gradient_accumulation_steps",),
    "eval_batch": ("per_device_eval_batch_size",),
    "grad_checkpointing": ("gradient_checkpointing",),
    "zero_config": ("deepspeed",),
    "dataloader_workers": ("dataloader_num_workers",),
    "optimizer": ("optim",),
    "fp16": ("fp16",),
    "bf16": ("bf16",),
    "ddp_timeout": ("ddp_timeout",),
}
_HF_DEFAULTS = {"micro_batch": 8, "grad_accum": 1, "eval_batch": 8, "grad_checkpointing": False,
                "dataloader_workers": 0}

LLAMA_FACTORY = Dialect(
    "llamafactory",
    {**_HF_KEYS,
     "seq_len": ("cutoff_len",),
     # LF-model:145: default False, so gradient checkpointing is ON unless disabled
     "grad_checkpointing": ("disable_gradient_checkpointing",),
     "preprocessing_workers": ("preprocessing_num_workers",),
     "quantization_bit": ("quantization_bit",),
     "lora_rank": ("lora_rank",)},
    {**_HF_DEFAULTS, "grad_checkpointing": True, "seq_len": 2048, "lora_rank": 8},
    frozenset({"grad_checkpointing"}),
)
HF_TRAINER = Dialect("hf", _HF_KEYS, _HF_DEFAULTS)
AXOLOTL = Dialect(
    "axolotl",
    {"micro_batch": ("micro_batch_size",), "grad_accum": ("gradient_accumulation_steps",),
     "global_batch": ("batch_size",), "eval_batch": ("eval_batch_size",), "seq_len": ("sequence_len",),
     "grad_checkpointing": ("gradient_checkpointing",), "zero_config": ("deepspeed",),
     "dataloader_workers": ("dataloader_num_workers",), "preprocessing_workers": ("dataset_processes",),
     "optimizer": ("optimizer",), "lora_rank": ("lora_r",), "fp16": ("fp16",), "bf16": ("bf16",)},
    {"micro_batch": 1, "grad_accum": 1, "seq_len": 512, "grad_checkpointing": False},
)
TORCHTUNE = Dialect(
    "torchtune",
    {"micro_batch": ("batch_size",), "grad_accum": ("gradient_accumulation_steps",),
     "seq_len": ("tokenizer", "max_seq_len"), "grad_checkpointing": ("enable_activation_checkpointing",)},
    {"grad_accum": 1, "grad_checkpointing": False},
)
DEEPSPEED = Dialect(
    "deepspeed",
    {"micro_batch": ("train_micro_batch_size_per_gpu",), "grad_accum": ("gradient_accumulation_steps",),
     "global_batch": ("train_batch_size",), "zero_stage": ("zero_optimization", "stage"),
     "offload": ("zero_optimization", "offload_optimizer", "device")},
    {"zero_stage": 0},
)
DIALECTS = {d.name: d for d in (LLAMA_FACTORY, HF_TRAINER, AXOLOTL, TORCHTUNE, DEEPSPEED)}

_LF_MARKERS = ("stage", "finetuning_type", "cutoff_len", "template", "dataset_dir", "lora_target",
               "disable_gradient_checkpointing", "preprocessing_num_workers", "quantization_bit")
_AX_MARKERS = ("base_model", "micro_batch_size", "sequence_len", "datasets", "adapter", "lora_r")


def _walk_has(obj: Any, key: str, depth: int = 0) -> bool:
    if depth > 20:
        return False
    if isinstance(obj, Mapping):
        if key in obj:
            return True
        return any(_walk_has(v, key, depth + 1) for v in obj.values())
    if isinstance(obj, list):
        return any(_walk_has(v, key, depth + 1) for v in obj)
    return False


def detect(data: Any, filename: str = "") -> Dialect | None:
    """Which framework a parsed config belongs to; None when it is not a training config oomfix knows."""
    if not isinstance(data, Mapping):
        return None
    if filename.endswith(".json") and not ("per_device_train_batch_size" in data and "zero_optimization" not in data):
        # (HF TrainingArguments saved as JSON, as Firefly's train_args/*.json, name per_device_train_batch_size,
        # which no DeepSpeed config has: read below as an HF / LLaMA-Factory config)
        if any(k in data for k in ("zero_optimization", "train_micro_batch_size_per_gpu", "train_batch_size",
                                   "gradient_accumulation_steps", "fp16", "bf16")):
            return DEEPSPEED
        return None
    if "batch_size" in data and "per_device_train_batch_size" not in data and _walk_has(data, "_component_"):
        return TORCHTUNE  # torchtune recipes also use gradient_accumulation_steps: check them first
    if "per_device_train_batch_size" in data or "gradient_accumulation_steps" in data:
        if any(k in data for k in _LF_MARKERS):
            return LLAMA_FACTORY
        if "micro_batch_size" in data:
            return AXOLOTL
        return HF_TRAINER
    if any(k in data for k in _LF_MARKERS) and ("model_name_or_path" in data or "stage" in data):
        return LLAMA_FACTORY
    if "micro_batch_size" in data or ("base_model" in data and any(k in data for k in _AX_MARKERS)):
        return AXOLOTL
    if "batch_size" in data and _walk_has(data, "_component_"):
        return TORCHTUNE
    return None


def get_path(data: Any, path: tuple[str, ...]) -> Any:
    cur = data
    for k in path:
        if not isinstance(cur, Mapping) or k not in cur:
            return None
        cur = cur[k]
    return cur


def read_canonical(data: Mapping[str, Any], dialect: Dialect) -> dict[str, Any]:
    """Canonical values of a parsed config: explicit values, else the framework default (None if unknown)."""
    out: dict[str, Any] = {}
    for canon, path in dialect.keys.items():
        v = get_path(data, path)
        explicit = v is not None
        if not explicit:
            v = dialect.defaults.get(canon)
        elif canon in dialect.inverted and isinstance(v, bool):
            v = not v
        out[canon] = v
    return out


def is_explicit(data: Mapping[str, Any], dialect: Dialect, canonical: str) -> bool:
    path = dialect.path(canonical)
    return path is not None and get_path(data, path) is not None
