"""Which checkpoint a relaunch may resume from: the newest COMPLETE `checkpoint-N` of an output directory.

A kill during a save leaves a `checkpoint-N` directory that `transformers.trainer_utils.get_last_checkpoint` would
still pick (it looks at names only), and resuming from it fails or, worse, loads torn weights. A directory counts
only when what it says it holds is whole:
- HF Trainer: `trainer_state.json` is present and parses (Trainer._save_checkpoint writes it after the model, the
  optimizer and the RNG states, so a save cut short has none);
- safetensors: every `*.safetensors` file is as long as its own header says (8-byte header length + JSON header +
  the end of the last tensor's data_offsets), and every shard a `*.safetensors.index.json` weight_map names exists
  and is whole; a `pytorch_model.bin.index.json`'s shards exist;
- DeepSpeed: a `latest` file names a tag, and that tag directory exists with non-empty model-states files and
  optimizer-states files (`*_model_states.pt`, `*_optim_states.pt`).
A half-written directory is skipped and said so (`Skipped`), and the next newer complete one wins.
"""
from __future__ import annotations

import json
import os
import re
import struct
from dataclasses import dataclass

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")  # transformers.trainer_utils.PREFIX_CHECKPOINT_DIR + "-N"
MAX_HEADER = 100 << 20  # safetensors refuses headers over 100 MB too


@dataclass(frozen=True)
class Skipped:
    path: str
    why: str


def _safetensors_problem(path: str) -> str | None:
    """Why a safetensors file is not whole, or None."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                return f"{os.path.basename(path)} is cut short ({size} bytes)"
            (n,) = struct.unpack("<Q", head)
            if n > MAX_HEADER or 8 + n > size:
                return f"{os.path.basename(path)} is cut short inside its header"
            header = json.loads(f.read(n))
    except OSError as e:
        return f"{os.path.basename(path)}: {e.strerror}"
    except (ValueError, UnicodeDecodeError):
        return f"{os.path.basename(path)} has an unreadable header"
    if not isinstance(header, dict):
        return f"{os.path.basename(path)} has an unreadable header"
    end = 0
    for k, v in header.items():
        if k == "__metadata__" or not isinstance(v, dict):
            continue
        offs = v.get("data_offsets")
        if isinstance(offs, list) and len(offs) == 2 and all(isinstance(x, int) for x in offs):
            end = max(end, offs[1])
    want = 8 + n + end
    if size < want:
        return f"{os.path.basename(path)} is {size} bytes, its header says {want}"
    return None


def _index_problem(ckpt: str, index: str) -> str | None:
    try:
        with open(os.path.join(ckpt, index), encoding="utf-8") as f:
            data = json.load(f)
        files = set((data.get("weight_map") or {}).values())
    except (OSError, ValueError, AttributeError):
        return f"{index} is unreadable"
    for name in sorted(str(x) for x in files):
        p = os.path.join(ckpt, name)
        if not os.path.isfile(p):
            return f"{index} names {name}, which is missing"
        if name.endswith(".safetensors"):
            why = _safetensors_problem(p)
            if why:
                return why
    return None


def _deepspeed_problem(ckpt: str) -> str | None:
    latest = os.path.join(ckpt, "latest")
    if not os.path.isfile(latest):
        return None
    try:
        with open(latest, encoding="utf-8") as f:
            tag = f.read(4096).strip()
    except (OSError, UnicodeDecodeError):
        return "DeepSpeed's `latest` is unreadable"
    tag_dir = os.path.join(ckpt, tag)
    if not tag or "/" in tag or tag in (".", "..") or not os.path.isdir(tag_dir):
        return f"DeepSpeed's `latest` names {tag!r}, which is not a directory here"
    try:
        names = os.listdir(tag_dir)
    except OSError as e:
        return f"{tag}: {e.strerror}"
    for kind in ("_model_states.pt", "_optim_states.pt"):
        found = [n for n in names if n.endswith(kind)]
        if not found:
            return f"DeepSpeed tag {tag} has no *{kind} file"
        empty = [n for n in found if os.path.getsize(os.path.join(tag_dir, n)) == 0]
        if empty:
            return f"DeepSpeed tag {tag}: {empty[0]} is empty"
    return None


def problem(ckpt: str) -> str | None:
    """Why `ckpt` is not a whole checkpoint, or None when everything it holds is whole."""
    try:
        names = sorted(os.listdir(ckpt))
    except OSError as e:
        return e.strerror or "unreadable"
    if "trainer_state.json" not in names:
        return "no trainer_state.json (the Trainer writes it last: the save was cut short)"
    try:
        with open(os.path.join(ckpt, "trainer_state.json"), encoding="utf-8") as f:
            if not isinstance(json.load(f), dict):
                return "trainer_state.json is not a JSON object"
    except (OSError, ValueError, UnicodeDecodeError):
        return "trainer_state.json is cut short or unreadable"
    for name in names:
        if name.endswith(".index.json"):
            why = _index_problem(ckpt, name)
            if why:
                return why
    for name in names:
        if name.endswith(".safetensors"):
            why = _safetensors_problem(os.path.join(ckpt, name))
            if why:
                return why
    return _deepspeed_problem(ckpt)


def newest_complete(output_dir: str) -> tuple[str | None, tuple[Skipped, ...]]:
    """The `checkpoint-N` with the largest N that is whole, and the newer ones skipped (with why)."""
    try:
        entries = os.listdir(output_dir)
    except OSError:
        return None, ()
    found = sorted(((int(m.group(1)), e) for e in entries if (m := _CHECKPOINT.match(e))
                    and os.path.isdir(os.path.join(output_dir, e))), reverse=True)
    skipped: list[Skipped] = []
    for _, name in found:
        path = os.path.join(output_dir, name)
        why = problem(path)
        if why is None:
            return path, tuple(skipped)
        skipped.append(Skipped(path, why))
    return None, tuple(skipped)
