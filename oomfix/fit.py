"""`oomfix fit`: will the relaunch fit? The memory model of `oomfix.memory`, calibrated by the OOM message, applied
to the config now and to every rung of the CUDA-OOM ladder; and the rung choice `apply` (hence `run`) uses.

Calibration. The caching allocator raises when allocated + requested would exceed what it can get, so at the
failing micro batch the peak was at least `allocated + requested` (the OOM message's numbers, see
`classify.py`). One measured point fits one unknown: the scale on activations + logits. The bound is one-sided,
so the scale is only ever raised by it (an analytic estimate already above the bound is consistent with it and is
kept). What the allocator could use is allocated + reserved-but-unallocated + free from the same message (the CUDA
context and other processes are already outside it), else the GPU's capacity less ~1 GiB.

A rung is predicted to fit when its peak x 1.1 <= that capacity (a 10% margin: allocator fragmentation and the
model's own error, measured within 3% on the CPU sweep).
"""
from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from oomfix.architectures import Architecture, resolve
from oomfix.configs import Config, resolve_ref, same_file
from oomfix.dialects import get_path
from oomfix.errors import ConfigError
from oomfix.memory import CUDA_RESERVED, GIB, Estimate, Setup, estimate
from oomfix.model import Diagnosis, MemoryInfo
from oomfix.rules import FailureClass, Rung, compute_changes, holds

MARGIN = 1.10
# what the CPU sweep measured (tests/data/fit_cpu_sweep.json, tests/test_fit.py): after calibration on one point,
# every other setting within this fraction
SWEEP_ERROR = 0.03


@dataclass(frozen=True)
class Candidate:
    """One rung (or rungs in a row) of the ladder, with the config values and the peak it predicts."""

    rules: tuple[tuple[str, int], ...]  # (rung id, how many times: a split repeated halves the micro batch again)
    label: str
    values: Mapping[str, Any]
    peak: int
    fits: bool | None  # None: capacity unknown

    @property
    def rule_id(self) -> str:
        return "+".join(r for r, _ in self.rules)

    def to_json(self) -> dict[str, Any]:
        return {"rules": [r for r, _ in self.rules], "label": self.label, "peak_gib": round(self.peak / GIB, 2),
                "fits": self.fits}


@dataclass(frozen=True)
class FitResult:
    """`oomfix fit`: the estimate for a config now and for each candidate rung, with what it is calibrated on."""

    config: str
    model: str | None
    arch: Architecture | None
    setup: Setup | None
    reason: str | None = None  # why the model cannot say (then nothing else is set)
    capacity: int | None = None
    capacity_source: str = ""
    calibrated: bool = False
    scale: float = 1.0
    calibration: str = ""
    now: Estimate | None = None
    candidates: tuple[Candidate, ...] = ()
    chosen: int | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def usable(self) -> bool:
        return self.reason is None and self.now is not None

    @property
    def uncertainty(self) -> str:
        if not self.usable:
            return "no estimate"
        if self.calibrated:
            return (f"calibrated on the OOM: the activation scale is {self.scale:.2f} of the analytic one; the OOM "
                    f"only bounds the peak from below, so rungs far from the failing one carry the analytic model's "
                    f"error (within {SWEEP_ERROR:.0%} on the CPU sweep, more on a trainer that keeps other tensors)")
        return ("analytic only (no OOM numbers to calibrate on): the trainer's own tensors, padding and fused "
                "kernels can move the activations by tens of percent")

    def to_json(self) -> dict[str, Any]:
        s = self.setup
        return {
            "config": self.config, "model": self.model,
            "architecture": None if self.arch is None else {"name": self.arch.name, "source": self.arch.source,
                                                            "params": self.arch.params()},
            "setup": None if s is None else {
                "micro_batch": s.micro_batch, "seq_len": s.seq_len, "grad_checkpointing": s.grad_checkpointing,
                "world_size": s.world_size, "zero_stage": s.zero_stage, "offload_optimizer": s.offload_optimizer,
                "offload_params": s.offload_params, "precision": s.precision, "finetuning": s.finetuning,
                "flash_attention": s.flash, "fused_cross_entropy": s.fused_ce},
            "reason": self.reason,
            "capacity_gib": None if self.capacity is None else round(self.capacity / GIB, 2),
            "capacity_source": self.capacity_source or None,
            "calibrated": self.calibrated, "scale": round(self.scale, 3), "calibration": self.calibration or None,
            "now": None if self.now is None else {k: round(v, 3) for k, v in self.now.breakdown().items()},
            "rungs": [c.to_json() for c in self.candidates],
            "chosen": None if self.chosen is None else self.candidates[self.chosen].to_json(),
            "uncertainty": self.uncertainty, "notes": list(self.notes),
        }


# --- the setup a config describes ---------------------------------------------------------------------------

def _ds_json(cfg: Config) -> dict[str, Any]:
    if cfg.zero is None or cfg.zero.path is None:
        return {}
    try:
        with open(cfg.zero.path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _zero_section(data: Mapping[str, Any]) -> dict[str, Any]:
    z = data.get("zero_optimization")
    return z if isinstance(z, dict) else {}


def _offloads(data: Mapping[str, Any]) -> tuple[bool, bool]:
    z = _zero_section(data)
    o, p = z.get("offload_optimizer"), z.get("offload_param")
    opt = o.get("device") if isinstance(o, dict) else None
    par = p.get("device") if isinstance(p, dict) else None
    return opt not in (None, "none"), par not in (None, "none")


# torchtune names the model by its builder (`model: {_component_: torchtune.models.llama3_1.lora_llama3_1_8b}`):
# the builder's family and size, as the architecture table names them
_TT_FAMILY = {"llama3_2": "llama-3.2", "llama3_1": "llama-3.1", "llama3": "llama-3", "llama2": "llama-2",
              "qwen2_5": "qwen2.5", "qwen3": "qwen3", "qwen2": "qwen2", "gemma": "gemma"}
_TT_BUILDER = re.compile(r"^(?:q?lora_)?(" + "|".join(sorted(_TT_FAMILY, key=len, reverse=True)) +
                         r"|mistral)_(\d+(?:_\d+)?b)$")


def _torchtune_model(d: Mapping[str, Any]) -> tuple[str | None, str]:
    """(the model's name for the table, or the builder's dotted path when it is not a known one; the finetuning type
    its builder implies)."""
    m = d.get("model")
    comp = m.get("_component_") if isinstance(m, dict) else None
    if not isinstance(comp, str) or not comp.strip():
        return None, "full"
    last = comp.strip().rsplit(".", 1)[-1]
    ft = "qlora" if last.startswith("qlora_") else "lora" if last.startswith("lora_") else "full"
    b = _TT_BUILDER.match(last)
    if b is None:
        return comp.strip(), ft
    fam, size = b.group(1), b.group(2).replace("_", ".")
    if fam == "mistral":
        return f"mistral-{size}-v0.1", ft  # torchtune's mistral_7b builds Mistral-7B-v0.1 (vocab 32000)
    return f"{_TT_FAMILY[fam]}-{size}", ft


def model_name(cfg: Config) -> str | None:
    """The model a config trains (its model_name_or_path, base_model or model_name), or None."""
    d = cfg.data if isinstance(cfg.data, dict) else {}
    if cfg.dialect.name == "torchtune":
        return _torchtune_model(d)[0]
    for k in ("model_name_or_path", "base_model", "model_name"):
        if isinstance(d.get(k), str) and d[k].strip():
            return d[k].strip()
    return None


_PARALLEL_KEYS = ("tensor_parallel_size", "context_parallel_size", "pipeline_parallel_size",
                  "sequence_parallel_degree", "tensor_model_parallel_size", "pipeline_model_parallel_size",
                  "tp_size", "pp_size", "cp_size")


def setup_from_config(cfg: Config, world: int | None, values: Mapping[str, Any] | None = None,
                      arch: Architecture | None = None) -> tuple[Setup | None, Architecture | None, str | None]:
    """(setup, architecture, why not) for a config; `values` overrides its canonical values (a rung's result)."""
    v = {**cfg.values, **(values or {})}
    d = cfg.data if isinstance(cfg.data, dict) else {}
    name = model_name(cfg)
    if arch is None:
        try:
            arch = resolve(name, cfg.path)
        except ConfigError as e:
            return None, None, str(e)
    if arch is None:
        return None, None, (f"model {name!r} is neither a local directory with a config.json nor in the table of "
                            f"known architectures" if name else "the config names no model")
    if cfg.dialect.name == "torchtune" and "optimizer" not in d:
        # torchtune's evaluation, generation and quantization recipes share the format but train nothing
        return None, arch, "the config does not train (no optimizer: an evaluation, generation or quantization config)"
    if cfg.dialect.name == "llamafactory" and d.get("do_train") is not True:
        # LLaMA-Factory trains only with do_train: true; without it the file is an inference, evaluation or export
        # config, and its batch "values" are mere defaults
        return None, arch, "the config does not train (no `do_train: true`: an inference, evaluation or export config)"
    micro, seq = v.get("micro_batch"), v.get("seq_len")
    if not isinstance(seq, int):
        # HF Trainer has no sequence key of its own; TRL's SFTConfig and custom scripts name it one of these
        seq = next((d[k] for k in ("max_seq_length", "max_length", "model_max_length", "max_seq_len")
                    if isinstance(d.get(k), int) and not isinstance(d.get(k), bool)), None)
    if not isinstance(micro, int) or micro < 1:
        return None, arch, "the config's micro batch is unknown"
    if not isinstance(seq, int) or seq < 1:
        return None, arch, ("the config's sequence length is unknown (it sets none, so samples are not truncated "
                            "and the longest one decides)")
    stage, deepspeed, off_opt, off_par = 0, False, False, False
    if cfg.zero is not None:
        deepspeed = True
        data = _ds_json(cfg)
        zs = _zero_section(data).get("stage")
        stage = zs if isinstance(zs, int) else (cfg.zero.stage or 0)
        off_opt, off_par = _offloads(data)
    # tensor / context / pipeline / sequence parallelism split activations and weights in ways the model does
    # not describe (axolotl's *_parallel_size, Megatron/NeMo-style names): say so rather than a confident number
    par = next(((k, d[k]) for k in _PARALLEL_KEYS if isinstance(d.get(k), int) and not isinstance(d.get(k), bool)
                and d[k] > 1), None)
    if par is not None:
        return None, arch, f"{par[0]}: {par[1]} (model parallelism) is not modelled"
    fsdp = str(d.get("fsdp") or "").lower()
    if "full_shard" in fsdp:
        stage = 3
    elif "shard_grad_op" in fsdp:
        stage = 2
    if cfg.dialect.name == "torchtune" and any(k in d for k in ("fsdp_cpu_offload", "fsdp_sharding_strategy",
                                                                 "fsdp_reshard_after_forward")):
        # torchtune's *_distributed recipes (the only ones with fsdp_* keys) shard with FSDP: FULL_SHARD unless
        # fsdp_sharding_strategy says otherwise
        strat = str(d.get("fsdp_sharding_strategy") or "full_shard").lower()
        stage = 2 if "shard_grad_op" in strat else 3
        if d.get("fsdp_cpu_offload") is True:
            off_opt = off_par = True
    fcfg = d.get("fsdp_config")
    if isinstance(fcfg, dict) and fcfg and (d.get("fsdp_version") or d.get("fsdp")):
        # axolotl / HF Trainer `fsdp_config`: FSDP1's sharding strategy, or FSDP2's reshard_after_forward
        # (True = parameters resharded after forward = full shard, False = SHARD_GRAD_OP)
        strat = str(fcfg.get("fsdp_sharding_strategy") or fcfg.get("sharding_strategy") or "").lower()
        raf = fcfg.get("reshard_after_forward", fcfg.get("fsdp_reshard_after_forward"))
        if "full_shard" in strat or "hybrid" in strat:
            stage = 3
        elif "shard_grad_op" in strat:
            stage = 2
        elif isinstance(raf, bool):
            stage = 3 if raf else 2
        elif not stage:
            return None, arch, "FSDP without a sharding strategy oomfix can read (fsdp_config) is not modelled"
        if fcfg.get("offload_params") or fcfg.get("fsdp_offload_params"):
            off_opt = off_par = True  # FSDP CPU offload moves parameters, gradients and the optimizer step
    if "zero_stage" in (values or {}):
        stage = values["zero_stage"]  # type: ignore[index]
        off_opt = bool((values or {}).get("offload_optimizer", False))
        off_par = bool((values or {}).get("offload_params", False))
    if stage and not world:
        return None, arch, ("the world size is unknown (ZeRO/FSDP divide model states by it) and no launcher or log "
                            "shows it (launchers are read below the current directory: run from the project root, "
                            "or pass --log)")
    tt_dtype = str(d.get("dtype") or "").lower() if cfg.dialect.name == "torchtune" else ""
    if d.get("pure_bf16"):
        precision = "pure_bf16"
    elif tt_dtype in ("bf16", "bfloat16"):
        precision = "pure_bf16"  # torchtune trains its weights, gradients and optimizer states all in `dtype`
    elif v.get("bf16") or v.get("fp16") or d.get("bf16") or d.get("fp16"):
        precision = "bf16"
    elif cfg.dialect.name == "llamafactory" and "bf16" not in d and "fp16" not in d:
        precision = "bf16"  # LLaMA-Factory loads the model in bf16 where the device has it
    else:
        precision = "fp32"
    ft = "full"
    if cfg.dialect.name == "llamafactory":
        ft = str(d.get("finetuning_type") or "lora")  # LLaMA-Factory's default
        if ft == "lora" and d.get("quantization_bit"):
            ft = "qlora"
    elif cfg.dialect.name == "axolotl":
        ft = {"lora": "lora", "qlora": "qlora"}.get(str(d.get("adapter") or ""), "full")
    elif cfg.dialect.name == "torchtune":
        ft = _torchtune_model(d)[1]
    if ft not in ("full", "lora", "qlora", "freeze"):
        return None, arch, f"finetuning type {ft!r} is not modelled"
    attn = str(d.get("flash_attn") or d.get("attn_implementation") or "auto").lower()
    flash = attn not in ("disabled", "eager")
    r, q = v.get("lora_rank"), d.get("quantization_bit")
    rank = r if isinstance(r, int) else 8
    bits = q if isinstance(q, int) else 4
    setup = Setup(arch, micro, seq, bool(v.get("grad_checkpointing")), world or 1, int(stage or 0), deepspeed,
                  off_opt, off_par, precision, ft, rank, bits, flash, fused_ce=_fused_ce(d))
    return setup, arch, None


def _fused_ce(d: Mapping[str, Any]) -> bool:
    """A loss that never materialises the full logits: axolotl's `liger_fused_linear_cross_entropy` or its Cut
    Cross-Entropy plugin (`cut_cross_entropy`), LLaMA-Factory's `enable_liger_kernel` and HF Trainer's
    `use_liger_kernel` (both apply Liger's fused linear cross-entropy), torchtune's `LinearCrossEntropyLoss`."""
    if any(d.get(k) is True for k in ("liger_fused_linear_cross_entropy", "cut_cross_entropy", "enable_liger_kernel",
                                      "use_liger_kernel")):
        return True
    plugins = d.get("plugins")
    if isinstance(plugins, list) and any(isinstance(p, str) and "cut_cross_entropy" in p for p in plugins):
        return True
    loss = d.get("loss")
    comp = loss.get("_component_") if isinstance(loss, dict) else None
    return isinstance(comp, str) and comp.rsplit(".", 1)[-1] == "LinearCrossEntropyLoss"


# --- capacity and calibration ---------------------------------------------------------------------------------

def capacity_of(mem: MemoryInfo | None, gpu_memory_gib: float | None) -> tuple[int | None, str]:
    """The bytes one device can give the job, and where that figure comes from (--gpu-memory, the OOM message)."""
    if gpu_memory_gib:
        # the user's figure wins over the log's: they may be moving the job to another card
        return (int(gpu_memory_gib * GIB - CUDA_RESERVED),
                f"--gpu-memory {gpu_memory_gib:g} GiB less ~1 GiB (CUDA context)")
    if mem is not None and mem.allocated_gib is not None and mem.free_gib is not None:
        got = mem.allocated_gib + (mem.reserved_unallocated_gib or 0.0) + mem.free_gib
        return int(got * GIB), (f"from the OOM: allocated {mem.allocated_gib:.2f} + reserved-unallocated "
                                f"{mem.reserved_unallocated_gib or 0:.2f} + free {mem.free_gib:.2f} GiB")
    if mem is not None and mem.total_gib:
        return int(mem.total_gib * GIB - CUDA_RESERVED), f"the GPU's {mem.total_gib:.2f} GiB less ~1 GiB (CUDA context)"
    return None, "no OOM numbers; pass --gpu-memory GIB"


def calibrate(now: Estimate, mem: MemoryInfo | None) -> tuple[float, bool, str]:
    """The activation scale from the OOM: peak >= allocated + requested at the failing setting."""
    if mem is None or mem.allocated_gib is None or mem.requested_gib is None:
        return 1.0, False, "no OOM numbers: analytic only"
    bound = (mem.allocated_gib + mem.requested_gib) * GIB
    act = now.activations + now.logits
    if act <= 0:
        return 1.0, False, "no activations to calibrate"
    k = (bound - now.states) / act
    if k <= 1.0:
        return 1.0, True, (f"the OOM shows a peak >= {bound / GIB:.2f} GiB (allocated {mem.allocated_gib:.2f} + "
                           f"requested {mem.requested_gib:.2f}); the analytic {now.peak / GIB:.2f} GiB is consistent "
                           f"with it: scale 1.00")
    return k, True, (f"the OOM shows a peak >= {bound / GIB:.2f} GiB (allocated {mem.allocated_gib:.2f} + requested "
                     f"{mem.requested_gib:.2f}) where the analytic model says {now.peak / GIB:.2f}: activations "
                     f"scaled by {k:.2f}")


# --- rungs as candidates ------------------------------------------------------------------------------------

_MODELLED = ("shift_factor", "set", "switch_file", "divide")


def _modelled(r: Rung) -> bool:
    if not r.edit:
        return False
    for e in r.edit:
        op, a = next(iter(e.items()))
        if op not in _MODELLED:
            return False
        if op == "set" and a.get("key") != "grad_checkpointing":
            return False
        if op == "divide" and a.get("key") != "seq_len":
            return False
        if op == "shift_factor" and (a.get("from"), a.get("to")) != ("micro_batch", "grad_accum"):
            return False
    return True


def _apply(r: Rung, values: dict[str, Any], times: int, target: Callable[[Rung], dict[str, Any] | None]
           ) -> dict[str, Any] | None:
    cur = dict(values)
    for _ in range(times):
        ch = compute_changes(r, cur)
        if ch is None:
            return None
        cur.update({c.key: c.new for c in ch})
    if any("switch_file" in e for e in r.edit):
        z = target(r)
        if z is None:
            return None
        cur.update(z)
    return cur if cur != values else None


def _label(before: Mapping[str, Any], after: Mapping[str, Any]) -> str:
    bits = []
    if after.get("micro_batch") != before.get("micro_batch"):
        bits.append(f"micro {after.get('micro_batch')} x accum {after.get('grad_accum')}")
    if after.get("grad_checkpointing") and not before.get("grad_checkpointing"):
        bits.append("gradient checkpointing on")
    if after.get("zero_stage") != before.get("zero_stage") or after.get("offload_optimizer") != \
            before.get("offload_optimizer"):
        bits.append(f"ZeRO-{after.get('zero_stage')}" + (" + offload" if after.get("offload_optimizer") else ""))
    if after.get("seq_len") != before.get("seq_len"):
        bits.append(f"seq {after.get('seq_len')}")
    return ", ".join(bits) or "no change"


def ladder_candidates(fc: FailureClass, values: Mapping[str, Any], facts: Mapping[str, Any], allow_semantic: bool,
                      target: Callable[[Rung], dict[str, Any] | None]) -> list[tuple[tuple[tuple[Rung, int], ...],
                                                                                        dict[str, Any]]]:
    """The configs the ladder can reach, least disruptive first: each modelled rung alone (a micro-batch split
    once, twice, ...), in ladder order; then the plain ladder's own path, rung after rung (combinations)."""
    base = dict(values)
    usable = [r for r in fc.ladder if (allow_semantic or not r.semantic)]
    first = next((r for r in usable if holds(r.when, facts) and compute_changes(r, base) is not None), None)
    if first is None or not _modelled(first):
        return []  # the plain ladder starts with a rung the model knows nothing about (advice, allocator, eval)
    out: list[tuple[tuple[tuple[Rung, int], ...], dict[str, Any]]] = []
    for r in usable:
        if not _modelled(r) or not holds(r.when, facts):
            continue
        times = 1
        while times <= 8:
            v = _apply(r, base, times, target)
            if v is None:
                break
            out.append((((r, times),), v))
            if not any("shift_factor" in e for e in r.edit):
                break
            times += 1
    # the plain ladder's path: each step the first rung that applies to what the previous steps left
    cur: dict[str, Any] = base
    path: list[tuple[Rung, int]] = []
    for _ in range(8):
        f = {**facts, "config": {**facts.get("config", {}), **cur},
             "zero": {"stage": cur.get("zero_stage"), "offload": "cpu" if cur.get("offload_optimizer") else None}}
        step = None
        for r in usable:
            if not _modelled(r) or not holds(r.when, f):
                continue
            v = _apply(r, cur, 1, target)
            if v is not None:
                step = (r, v)
                break
        if step is None:
            break
        r, cur = step
        if path and path[-1][0].id == r.id:
            path[-1] = (r, path[-1][1] + 1)
        else:
            path.append((r, 1))
        if len(path) > 1 or path[0][1] > 1:
            combo = tuple(path)
            if all(c[0] != combo for c in out):
                out.append((combo, dict(cur)))
    return out


def predict(cfg: Config, world: int | None, diag: Diagnosis | None, fc: FailureClass | None,
            facts: Mapping[str, Any], allow_semantic: bool, target: Callable[[Rung], dict[str, Any] | None],
            gpu_memory_gib: float | None = None, arch: Architecture | None = None) -> FitResult:
    """The estimate for the config now (at the values the failing run used, where the log shows them) and for every
    candidate rung, calibrated on the OOM message when there is one."""
    run_values: dict[str, Any] = {}
    if diag is not None:
        run_values = {k: v for k, v in diag.run.canonical_values().items() if isinstance(v, int)}
    values = {**cfg.values, **_zero_values(cfg)}
    setup, arch, why = setup_from_config(cfg, world, values, arch)
    name = model_name(cfg)
    if setup is None:
        return FitResult(cfg.path, name, arch, None, reason=why)
    mem = diag.memory if diag is not None else None
    capacity, cap_src = capacity_of(mem, gpu_memory_gib)
    notes: list[str] = []
    # calibrate where the run failed: the log's batch values when it shows them (the config may have moved since)
    failed: Setup | None = setup
    if run_values and any(cfg.values.get(k) != v for k, v in run_values.items()):
        failed, _, _ = setup_from_config(cfg, world, {**values, **run_values}, arch)
        notes.append(f"the log ran at {run_values}, the config now says "
                     f"{ {k: cfg.values.get(k) for k in run_values} }: calibrated at the log's values")
    scale, calibrated, how = 1.0, False, "no OOM numbers: analytic only"
    if failed is not None:
        scale, calibrated, how = calibrate(estimate(failed), mem if diag is not None and diag.cls == "cuda_oom"
                                           else None)
    now = estimate(setup, scale)
    cands: list[Candidate] = []
    if fc is not None:
        for rungs, v in ladder_candidates(fc, values, facts, allow_semantic, target):
            s2, _, why2 = setup_from_config(cfg, world, v, arch)
            if s2 is None:
                continue
            if failed is not None and diag is not None and s2 == failed:
                # the config has moved since the run (the log's values differ): a rung that lands back on the
                # setting the log shows failing is no fix, whatever the estimate says
                notes.append(f"{_label(values, v)}: the setting the log's run failed at; not proposed")
                continue
            peak = estimate(s2, scale).peak
            if peak > now.peak:
                continue  # never a rung that raises per-device memory
            fits = None if capacity is None else peak * MARGIN <= capacity
            cands.append(Candidate(tuple((r.id, t) for r, t in rungs), _label(values, v), v, peak, fits))
    chosen = next((i for i, c in enumerate(cands) if c.fits), None)
    if capacity is not None and now.peak * MARGIN <= capacity:
        # no rung needed by the model's account; after a real OOM the model is wrong here: the plain ladder decides
        chosen = None
        notes.append("the config is predicted to fit as it is: no rung is needed by this estimate"
                     + ("; it failed all the same, so the plain ladder decides" if calibrated else ""))
    elif chosen is None and capacity is not None:
        # none with the 10% margin: the first predicted to fit at all, said to be tight
        chosen = next((i for i, c in enumerate(cands) if c.peak <= capacity), None)
        if chosen is not None:
            notes.append(f"{cands[chosen].label}: predicted to fit, but within the 10% margin (tight)")
    return FitResult(cfg.path, name, arch, setup, None, capacity, cap_src, calibrated, scale, how, now,
                     tuple(cands), chosen, tuple(notes))


def _zero_values(cfg: Config) -> dict[str, Any]:
    if cfg.zero is None:
        return {}
    data = _ds_json(cfg)
    off_opt, off_par = _offloads(data)
    zs = _zero_section(data).get("stage")
    stage = zs if isinstance(zs, int) else cfg.zero.stage
    return {"zero_stage": stage or 0, "offload_optimizer": off_opt, "offload_params": off_par}


def zero_of_ref(ref: str, cfg: Config) -> dict[str, Any] | None:
    """What a `deepspeed:` reference points at: its stage and offloads, for a switch_file rung's result."""
    path = resolve_ref(ref, cfg.path)
    if path is None:
        return None
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    stage = get_path(data, ("zero_optimization", "stage"))
    off_opt, off_par = _offloads(data)
    return {"zero_config": ref, "zero_stage": stage if isinstance(stage, int) else 0,
            "offload_optimizer": off_opt, "offload_params": off_par}


def switch_targets(cfg: Config) -> Callable[[Rung], dict[str, Any] | None]:
    """For `predict`: what a switch_file rung switches `cfg` to (its stage and offloads), None for other rungs."""
    from oomfix.apply import _switch_target

    def target(r: Rung) -> dict[str, Any] | None:
        ref = _switch_target(r, cfg)
        return None if ref is None else zero_of_ref(ref, cfg)

    return target


def render_text(res: FitResult) -> str:
    """`oomfix fit`'s text: the setup, the estimate now, each rung's, and how sure it is."""
    out = [f"config: {res.config}"]
    if res.reason is not None:
        out.append(f"no estimate: {res.reason}")
        return "\n".join(out) + "\n"
    a, s = res.arch, res.setup
    assert a is not None and s is not None and res.now is not None
    src = "its config.json" if a.source == "config.json" else a.source
    n = a.params()
    size = f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.2f}M"
    out.append(f"model: {res.model} ({size} parameters; architecture from {src})")
    par = f"ZeRO-{s.zero_stage}" if s.zero_stage else "no ZeRO"
    if s.offload_optimizer:
        par += " + optimizer offload" + (" + parameter offload" if s.offload_params else "")
    out.append(f"setup: {s.finetuning} fine-tuning, {s.precision}, {par}, world size {s.world_size}, micro batch "
               f"{s.micro_batch}, sequence length {s.seq_len}, gradient checkpointing "
               f"{'on' if s.grad_checkpointing else 'off'}, {'flash/SDPA' if s.flash else 'eager'} attention"
               + (", fused cross-entropy (no full logits)" if s.fused_ce else ""))
    cap = "unknown" if res.capacity is None else _gib(res.capacity)
    out.append(f"capacity: {cap} ({res.capacity_source})")
    out.append(f"calibration: {res.calibration}")
    b = res.now.breakdown()
    floor = "at least " if res.calibrated and res.scale > 1.0 else ""  # raised to the OOM's lower bound
    out.append(f"now: {floor}{_gib(res.now.peak)} per device (model states {_gib(res.now.states)}, activations "
               f"{_gib(b['activations_gib'] * GIB)}, logits {_gib(b['logits_gib'] * GIB)})"
               + _verdict(res.now.peak, res.capacity))
    if res.candidates:
        out.append("rungs (least disruptive first; * = the first predicted to fit with a 10% margin, else the first "
                   "tight one):")
        w = max(len(c.label) for c in res.candidates)
        for i, c in enumerate(res.candidates):
            mark = "*" if i == res.chosen else " "
            fits = "tight    " if c.fits is False and res.capacity is not None and c.peak <= res.capacity else \
                _fits(c.fits)
            out.append(f"  {mark} {c.label:<{w}}  {_gib(c.peak):>10}  {fits}  ({c.rule_id})")
        if res.chosen is None and res.capacity is not None and res.now.peak > res.capacity:
            out.append("  no rung is predicted to fit: the plain ladder's next rung, then the next")
    for note in res.notes:
        out.append(f"note: {note}")
    out.append(f"uncertainty: {res.uncertainty}")
    return "\n".join(out) + "\n"


def _gib(n: float) -> str:
    return f"{n / GIB:.2f} GiB" if n >= GIB / 10 else f"{n / (1 << 20):.1f} MiB"


def _fits(f: bool | None) -> str:
    return {True: "fits     ", False: "too large", None: "?        "}[f]


def _verdict(peak: int, cap: int | None) -> str:
    if cap is None:
        return ""
    return " - fits" if peak * MARGIN <= cap else (" - over capacity" if peak > cap else " - within 10% of capacity")


def prediction_lines(res: FitResult) -> list[str]:
    """The short form `apply` prints beside its diff."""
    if not res.usable or res.capacity is None:
        return [f"memory model: cannot say ({res.reason or 'capacity unknown'}); the plain ladder"]
    assert res.now is not None
    # raised to the OOM's bound, the estimate is a floor: "now 76.7 against 77.3 usable" would read as if it fit
    floor = "at least " if res.calibrated and res.scale > 1.0 else ""
    lines = [f"memory model: now {floor}{res.now.peak / GIB:.1f} GiB per device against {res.capacity / GIB:.1f} GiB "
             f"usable ({'calibrated on the OOM' if res.calibrated else 'analytic only'})"]
    for i, c in enumerate(res.candidates):
        tag = "  <- proposed" if i == res.chosen else ""
        verdict = "fits" if c.fits else ("tight (within the 10% margin)" if c.peak <= res.capacity else "too large")
        lines.append(f"  {c.label}: {c.peak / GIB:.1f} GiB, {verdict}{tag}")
    if res.chosen is None and res.now.peak * MARGIN <= res.capacity:
        lines.append("  the config itself is predicted to fit, yet it failed: the estimate is off here; the plain "
                     "ladder's next rung")
    elif res.chosen is None:
        lines.append("  no rung is predicted to fit: the plain ladder's next rung")
    return lines


__all__ = ["Candidate", "FitResult", "predict", "setup_from_config", "calibrate", "capacity_of", "render_text",
           "prediction_lines", "ladder_candidates", "zero_of_ref", "MARGIN"]



def fit_config(config: str, log: str | None = None, gpu_memory_gib: float | None = None, root: str = ".",
               rules_dir: str | None = None) -> FitResult:
    """`oomfix fit`: the estimate for CONFIG now and for each rung of the CUDA-OOM ladder, calibrated by LOG's OOM
    message when it has one."""
    from oomfix.apply import _world_for, config_facts
    from oomfix.configs import job_for_config, launchers_in, load_config
    from oomfix.diagnose import diagnose_logs, diagnosis_facts
    from oomfix.errors import UsageError
    from oomfix.rules import load_rules

    if gpu_memory_gib is not None and not 1 < gpu_memory_gib < 1e6:
        raise UsageError(f"--gpu-memory {gpu_memory_gib:g}: give the GPU's memory in GiB (e.g. 80)")
    cfg = load_config(config)
    launchers = launchers_in([root])
    diag = diagnose_logs([log], rules_dir=rules_dir) if log else None
    if diag is not None:
        world = _world_for(cfg, cfg, diag, launchers)
    else:
        found = job_for_config(cfg.path, launchers)
        world = found[1].world_size if found else None
    fc = load_rules(rules_dir).classes.get("cuda_oom")
    facts = config_facts(diagnosis_facts(diag) if diag is not None else {}, cfg, launchers)
    res = predict(cfg, world, diag, fc, facts, False, switch_targets(cfg), gpu_memory_gib)
    if diag is not None and diag.cls != "cuda_oom":
        what = "shows no failure" if diag.cls == "none" else f"is a {diag.cls} failure"
        res = FitResult(**{**res.__dict__, "notes": res.notes + (f"{log} {what}, not a CUDA OOM: nothing to "
                                                                  f"calibrate on",)})
    ran = diag.run.config if diag is not None else None
    if ran and os.path.isfile(ran) and not same_file(ran, config):
        # a sibling's OOM still calibrates (same model, same GPUs), but the user should know it is not this config's
        res = FitResult(**{**res.__dict__, "notes": res.notes + (f"{log} is a run of {ran}, not of {config}: "
                                                                  f"calibrated on another config's run",)})
    return res
