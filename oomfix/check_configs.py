"""`oomfix check`, the config checks: each config against its siblings (drifted memory settings, a different
global batch: `check_sibling_drift`, `check_global_batch`) and against the DeepSpeed file it names (missing,
outside the tree, unreadable, batch sizes that disagree: `check_deepspeed`).
"""
from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from oomfix.checktree import (ERROR, WARNING, Finding, Tree, _config_key_line, _explicit, _keyname, _world,
                              sibling_groups)
from oomfix.configs import Config, display_path, inside, same_file, small
from oomfix.dialects import MEMORY_KEYS
from oomfix.launcher import concurrent

_DRIFT_KEYS = MEMORY_KEYS + ("zero_stage", "offload")


def _shown(v: Any) -> str:
    return "unset" if v is None else repr(v)


def _evidence(tree: Tree, a: Config, b: Config) -> tuple[str, str]:
    """How sure two configs are siblings: started side by side by one launcher (an error when they drift), or
    only alike (same directory, model, dataset and stage: a warning that says so)."""
    ja, jb = tree.job_of(a), tree.job_of(b)
    if ja and jb and same_file(ja[0].path, jb[0].path):
        if concurrent(ja[1], jb[1]):
            return ERROR, f"{ja[0].path} starts both side by side"
        return WARNING, (f"{ja[0].path} starts them one after the other (lines {ja[1].line} and {jb[1].line}), "
                         f"which a sweep of deliberate variants does too")
    return WARNING, ("grouped because they sit in one directory with the same model, dataset and stage; no "
                     "launcher starts them together. Mark a deliberate variant `# oomfix: standalone`")


def _strategy(c: Config) -> tuple[Any, ...]:
    """How a config spreads the model over the GPUs: DeepSpeed (which file or preset), FSDP, or plain DDP."""
    d = c.data if isinstance(c.data, dict) else {}
    return (c.values.get("zero_config"), bool(d.get("fsdp") or d.get("fsdp_config") or d.get("fsdp_version")))


# keys every copy of a job sets to its own value: where it writes, what it is called, how it is logged
_PER_JOB_KEYS = re.compile(r"output_dir|run_name|logging_dir|wandb_\w+|hub_model_id|seed|data_seed|resume\w*|"
                           r"save_steps|logging_steps|eval_steps|save_total_limit|report_to|overwrite\w*|"
                           r"dataset_prepared_path|tokenized_path|cache_dir|\w*_port|master_\w+|plot_loss|"
                           r"save_only_model|ddp_timeout|push_to_hub|special_tokens|val_set_size")


def _variant_keys(a: Config, b: Config) -> list[str]:
    """Top-level keys, other than the memory settings and the per-job ones, on which two alike configs differ:
    two copies of one job differ only in those (the origin story's siblings differ in output_dir and in the memory
    edit); a different optimizer, sequence length, quantization or mode makes a deliberate variant."""
    da = a.data if isinstance(a.data, dict) else {}
    db = b.data if isinstance(b.data, dict) else {}
    memory = {p[0] for c in (a, b) for k in _DRIFT_KEYS + ("zero_config",) if (p := c.dialect.path(k))}
    out = []
    for k in set(da) | set(db):
        if k in memory or _PER_JOB_KEYS.fullmatch(str(k)):
            continue
        if not (small(da.get(k)) and small(db.get(k))) or da.get(k) != db.get(k):
            out.append(str(k))
    return sorted(out)


def check_sibling_drift(tree: Tree) -> Iterator[Finding]:
    for group in sibling_groups(tree):
        ref = group[0]
        for other in group[1:]:
            severity, why = _evidence(tree, ref, other)
            if severity != ERROR and (_strategy(ref) != _strategy(other) or _variant_keys(ref, other)):
                continue  # alike, but another experiment: a different strategy, optimizer, data length, ...
            same_world = _world(tree, ref) == _world(tree, other)
            for key in _DRIFT_KEYS:
                if key in ("micro_batch", "grad_accum") and not same_world:
                    continue  # different world sizes may justify a different split; the global batch must agree
                a, b = ref.values.get(key), other.values.get(key)
                if key == "zero_config" and ref.zero and other.zero and ref.zero.path and other.zero.path and \
                        same_file(ref.zero.path, other.zero.path):
                    continue
                if key in ("zero_stage", "offload"):
                    explicit = ref.zero is not None and other.zero is not None
                else:
                    explicit = _explicit(ref, key) and _explicit(other, key)
                if severity != ERROR and not explicit:
                    continue  # one of them leaves it to the framework: nothing written drifted
                if a != b and key in ref.values and key in other.values:
                    yield Finding("sibling-drift", severity, other.path, _config_key_line(other, key),
                                  f"{_keyname(other, key)} is {_shown_in(other, key)} here but {_shown_in(ref, key)} "
                                  f"in its sibling {ref.path} ({why})",
                                  "`oomfix apply --align-siblings` moves every drifted sibling to the lower-memory "
                                  "split (no log needed), or give them different world sizes on purpose")


def _shown_in(cfg: Config, key: str) -> str:
    """A config's value as its file has it: a key it does not set is "unset", with the framework's default."""
    v = cfg.values.get(key)
    if key not in ("zero_stage", "offload") and not _explicit(cfg, key):
        return "unset" if v is None else f"unset (the default, {v!r})"
    return _shown(v)


def check_global_batch(tree: Tree) -> Iterator[Finding]:
    for group in sibling_groups(tree):
        sized = []
        for c in group:
            w, m, a = _world(tree, c), c.values.get("micro_batch"), c.values.get("grad_accum")
            if isinstance(w, int) and isinstance(m, int) and isinstance(a, int):
                sized.append((c, w, w * m * a))
        if len(sized) < 2:
            continue
        ref, rw, rg = sized[0]
        for c, w, g in sized[1:]:
            if g != rg:
                severity, why = _evidence(tree, ref, c)
                if severity != ERROR and (_strategy(ref) != _strategy(c) or _variant_keys(ref, c)):
                    continue  # a deliberate variant (see check_sibling_drift)
                yield Finding("global-batch-mismatch", severity, c.path, _config_key_line(c, "micro_batch"),
                              f"global batch {g} ({w} GPUs x {c.values['micro_batch']} x {c.values['grad_accum']}) "
                              f"differs from {rg} in its sibling {ref.path} ({rw} GPUs x {ref.values['micro_batch']} x "
                              f"{ref.values['grad_accum']}; {why})",
                              "siblings train the same model the same way: make world size x micro batch x "
                              "accumulation equal")


def check_deepspeed(tree: Tree) -> Iterator[Finding]:
    for c in tree.configs:
        if c.zero is None:
            continue
        line = _config_key_line(c, "zero_config")
        if c.zero.path is None and c.zero.preset == "axolotl-fetch":
            yield Finding("deepspeed-mismatch", WARNING, c.path, line,
                          f"deepspeed: {c.zero.ref} is one of axolotl's bundled files, not in this tree; axolotl "
                          f"reads it from the directory it runs in", "run `axolotl fetch deepspeed_configs` there, "
                          "or commit the file")
            continue
        if c.zero.path is None and c.zero.preset:
            continue  # the framework's own bundled file (batch keys "auto"): nothing here to disagree with
        if c.zero.path is None:
            yield Finding("deepspeed-mismatch", ERROR, c.path, line,
                          f"the DeepSpeed config {c.zero.ref!r} does not exist (relative to here, the config's folder "
                          f"or its parents)", "fix the path in the deepspeed: key")
            continue
        if not inside(c.zero.path, tree.root):
            yield Finding("deepspeed-mismatch", WARNING, c.path, line,
                          f"deepspeed: {c.zero.ref} resolves outside the tree being checked, to {c.zero.path}; "
                          f"it was read from there", "keep DeepSpeed configs inside the project, or check from the "
                          "directory they are relative to")
        if c.zero.problem:
            yield Finding("deepspeed-mismatch", ERROR, c.path, line, c.zero.problem,
                          "remove the comments, trailing commas and BOM from the DeepSpeed config")
        b = c.zero.batch
        w = _world(tree, c)
        m, a = c.values.get("micro_batch"), c.values.get("grad_accum")
        checks = [("train_micro_batch_size_per_gpu", m), ("gradient_accumulation_steps", a)]
        if isinstance(w, int) and isinstance(m, int) and isinstance(a, int):
            checks.append(("train_batch_size", w * m * a))
        for key, want in checks:
            if key in b and want is not None and b[key] != want:
                yield Finding("deepspeed-mismatch", ERROR, c.path, line,
                              f"{display_path(c.zero.path)} sets {key}: {b[key]!r} but this config implies {want}; "
                              f"HF Trainer raises a mismatch error at start-up",
                              f'set {key} to "auto" in the DeepSpeed config, or make the numbers agree')
