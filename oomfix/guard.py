"""The memory guard: no OOM fix may raise per-device memory, whatever a rule file (built-in or `--rules`) says.

Applied to what a rung computes for each config, in canonical units, after every rule and before any text is
edited (`apply._memory_never_rises` calls `check_rung` for the primary config and again for each sibling). A rung
is refused, naming the rule, when:
- a value is not valid for its key at all (`64.0` or `"64"` as a batch, a micro batch of -4, accumulation 0): for
  every class, since no framework would start with it;
- after a memory failure (`cuda_oom`, `host_oom`), a change raises per-device memory: a larger micro or eval batch,
  sequence length, LoRA rank or worker count; gradient checkpointing turned off; mixed precision turned off;
  quantization turned off or widened; a lower ZeRO stage, a dropped offload, a DeepSpeed config switched to one
  with a lower stage or no offload (the target file is read), or removed; an optimizer swapped for one that is not
  known to need less memory. A value that was unknown before cannot be shown not to rise, so it is refused too.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from oomfix.errors import RuleError
from oomfix.model import MEMORY_CLASSES
from oomfix.rules import Rung, canonical_value_problem

# per-device memory grows with these (a worker is a process holding host memory and CUDA context)
GROWS_WITH = ("micro_batch", "eval_batch", "seq_len", "lora_rank", "preprocessing_workers", "dataloader_workers")
# optimizers whose states take less memory than AdamW's two fp32 moments (bitsandbytes 8-bit, paged, factored)
_LEAN_OPTIMIZER_WORDS = ("8bit", "paged", "adafactor", "lomo", "galore", "apollo", "sgd")


def _lean(opt: Any) -> bool:
    return isinstance(opt, str) and any(w in opt.lower() for w in _LEAN_OPTIMIZER_WORDS)


def _refuse(rung: Rung, path: str, msg: str) -> RuleError:
    return RuleError(f"{rung.source}: rule '{rung.id}' {msg} for {path}; refusing (an OOM fix never raises "
                     f"per-device memory)")


def check_rung(cls: str, changes: Sequence[Any], rung: Rung, cfg: Any, switched_to: str | None = None) -> None:
    """Raise RuleError when the rung's changes to `cfg` (CanonicalChange key/old/new) are invalid, or raise
    per-device memory after a memory failure. `switched_to`: the DeepSpeed config a switch_file edit points at."""
    old_values: Mapping[str, Any] = cfg.values
    new_values = {**old_values, **{c.key: c.new for c in changes}}
    for ch in changes:
        problem = canonical_value_problem(ch.key, ch.new)
        if problem:
            raise RuleError(f"{rung.source}: rule '{rung.id}' would set {ch.key} to {ch.new!r} for {cfg.path}: "
                            f"{ch.key} {problem}")
    if cls not in MEMORY_CLASSES:
        return
    for ch in changes:
        old, new = ch.old, ch.new
        if ch.key in GROWS_WITH:
            if not isinstance(old, int) or isinstance(old, bool):
                raise _refuse(rung, cfg.path, f"would set {ch.key} to {new!r} where it was unknown")
            if new > old:
                raise _refuse(rung, cfg.path, f"would raise {ch.key} from {old} to {new}")
        elif ch.key == "grad_checkpointing" and new is False and old is not False:
            raise _refuse(rung, cfg.path, "would turn gradient checkpointing off")
        elif ch.key in ("fp16", "bf16") and new is False and old is not False \
                and not (new_values.get("fp16") is True or new_values.get("bf16") is True):
            raise _refuse(rung, cfg.path, f"would turn {ch.key} mixed precision off")
        elif ch.key == "quantization_bit" and isinstance(old, int) and (new is None or new > old):
            raise _refuse(rung, cfg.path, f"would {'turn quantization off' if new is None else 'widen quantization'}"
                                          f" ({old} -> {new} bits)")
        elif ch.key == "zero_stage" and (not isinstance(old, int) or new < old):
            raise _refuse(rung, cfg.path, f"would lower the ZeRO stage ({old} -> {new})")
        elif ch.key == "offload" and old not in (None, "none") and new in (None, "none"):
            raise _refuse(rung, cfg.path, f"would drop the ZeRO offload ({old})")
        elif ch.key == "optimizer" and (_lean(old) or not _lean(new)):
            raise _refuse(rung, cfg.path, f"would swap the optimizer {old!r} for {new!r}, which is not known to "
                                          f"need less memory")
        elif ch.key == "zero_config":
            _check_zero_switch(rung, cfg, new)
    if switched_to is not None:
        _check_zero_switch(rung, cfg, switched_to)


def _check_zero_switch(rung: Rung, cfg: Any, ref: Any) -> None:
    """A new DeepSpeed config must shard at least as much as the current one: same or higher stage, offload kept."""
    from oomfix.configs import zero_info

    cur = cfg.zero
    if ref is None or (isinstance(ref, str) and not ref.strip()):
        if cur is not None:
            raise _refuse(rung, cfg.path, f"would remove the DeepSpeed config {cur.ref}")
        return
    new = zero_info(ref, cfg.path)
    if new is None or new.path is None or new.stage is None:
        raise _refuse(rung, cfg.path, f"would point the DeepSpeed config at {ref}, which does not exist or has no "
                                      f"ZeRO stage oomfix can read")
    old_stage = cur.stage if cur is not None and cur.stage is not None else 0
    if new.stage < old_stage:
        raise _refuse(rung, cfg.path, f"would switch to ZeRO-{new.stage} ({ref}) from ZeRO-{old_stage}")
    if cur is not None and cur.offload not in (None, "none") and new.offload in (None, "none"):
        raise _refuse(rung, cfg.path, f"would switch to {ref}, which drops the ZeRO offload ({cur.offload})")
