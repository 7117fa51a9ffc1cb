"""Which checkpoint a relaunch may resume from, the newest COMPLETE `checkpoint-N` of an output directory, and the
command line that resumes from it (`oomfix run --resume`).

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
The relaunch resumes through its command line for that one attempt (`resume_argv`); the config is not edited.
"""
from __future__ import annotations

import json
import os
import re
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")  # transformers.trainer_utils.PREFIX_CHECKPOINT_DIR + "-N"
MAX_HEADER = 100 << 20  # safetensors refuses headers over 100 MB too


@dataclass(frozen=True)
class Skipped:
    """A checkpoint-N directory passed over, and why it is not whole."""

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


def _numbered(output_dir: str) -> list[tuple[int, str]]:
    """(N, name) of every `checkpoint-N` directory in output_dir; none when it cannot be listed."""
    try:
        entries = os.listdir(output_dir)
    except OSError:
        return []
    return [(int(m.group(1)), e) for e in entries if (m := _CHECKPOINT.match(e))
            and os.path.isdir(os.path.join(output_dir, e))]


def newest_checkpoint(output_dir: str) -> str | None:
    """What transformers.trainer_utils.get_last_checkpoint returns: the checkpoint-N directory with the largest N."""
    found = _numbered(output_dir)
    return os.path.join(output_dir, max(found)[1]) if found else None


def newest_complete(output_dir: str) -> tuple[str | None, tuple[Skipped, ...]]:
    """The `checkpoint-N` with the largest N that is whole, and the newer ones skipped (with why)."""
    found = sorted(_numbered(output_dir), reverse=True)
    skipped: list[Skipped] = []
    for _, name in found:
        path = os.path.join(output_dir, name)
        why = problem(path)
        if why is None:
            return path, tuple(skipped)
        skipped.append(Skipped(path, why))
    return None, tuple(skipped)


# --- the relaunch's command line ----------------------------------------------------------------------------------

def _is_override(tok: str) -> bool:
    return bool(re.fullmatch(r"[A-Za-z_][\w.]*=.*", tok, re.S))


def _complete(output_dir: str, say: Callable[[str], None] | None) -> str | None:
    """The newest complete checkpoint-N; the half-written newer ones are said, and skipped."""
    path, skipped = newest_complete(output_dir)
    for s in skipped:
        if say is not None:
            say(f"oomfix run: skipping {s.path}: {s.why}")
    return path


def resume_argv(argv: Sequence[str], config: str | None,
                say: Callable[[str], None] | None = None) -> tuple[tuple[str, ...] | None, str]:
    """The command resuming from the newest complete checkpoint of its output directory, for one attempt (the config
    is not edited), or None and why not.

    - LLaMA-Factory (`llamafactory-cli train X.yaml`, or its launcher under torchrun): `read_args` merges
      `key=value` words after the YAML into it (OmegaConf.from_cli), so `resume_from_checkpoint=PATH` is appended.
    - HF Trainer scripts parsed with HfArgumentParser flags (`--output_dir DIR ...`): `--resume_from_checkpoint
      PATH`, which the script must pass to `trainer.train()` (the transformers examples do).
    """
    toks = list(argv)
    flag_dir = None
    for i, t in enumerate(toks):
        name, eq, value = t.partition("=")
        if name in ("--output_dir", "--output-dir"):
            flag_dir = value if eq else (toks[i + 1] if i + 1 < len(toks) else None)
    if flag_dir is not None:
        if any(t.partition("=")[0] == "--resume_from_checkpoint" for t in toks):
            return None, "the command already names --resume_from_checkpoint"
        ckpt = _complete(flag_dir, say)
        if ckpt is None:
            return None, f"no complete checkpoint-N in {flag_dir}"
        return (*toks, "--resume_from_checkpoint", ckpt), f"resuming from {ckpt}"
    if not config:
        return None, "the command names no config (LLaMA-Factory YAML) and no --output_dir"
    idx = next((i for i, t in enumerate(toks) if t.endswith((".yaml", ".yml", ".json"))
                and os.path.exists(t) and os.path.samefile(t, config)), None)
    if idx is None or not all(_is_override(t) for t in toks[idx + 1:]):
        return None, f"{config} is not the last argument of the command (only `X.yaml key=value ...` takes overrides)"
    if any(t.startswith("resume_from_checkpoint=") for t in toks[idx + 1:]):
        return None, "the command already sets resume_from_checkpoint"
    out_dir = next((t.split("=", 1)[1] for t in toks[idx + 1:] if t.startswith("output_dir=")), None)
    if out_dir is None:
        from oomfix.configs import load_config

        out_dir = load_config(config).data.get("output_dir")
    if not isinstance(out_dir, str):
        return None, f"{config} has no output_dir"
    ckpt = _complete(out_dir, say)
    if ckpt is None:
        return None, f"no complete checkpoint-N in {out_dir}"
    return (*toks, f"resume_from_checkpoint={ckpt}"), f"resuming from {ckpt}"

