"""Training configs on disk: loading, the DeepSpeed files they reference, siblings, and discovery in a tree."""
from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from oomfix.dialects import DEEPSPEED, Dialect, detect, get_path, read_canonical
from oomfix.editor import json_strictness, parse_config_text
from oomfix.errors import ConfigError, EditRefused
from oomfix.launcher import Launcher, job_path, parse_launcher

MAX_CONFIG_BYTES = 8 << 20  # the largest real config in the corpus is 12 KB; 8 MB is not a config
SKIP_DIRS = {".git", ".oomfix", "node_modules", "__pycache__", ".venv", "venv", ".ci-venv", ".tox", "site-packages"}


@dataclass(frozen=True)
class ZeroInfo:
    ref: str  # as written in the config
    path: str | None  # resolved file, None if it does not exist
    stage: int | None = None
    offload: str | None = None
    batch: dict[str, Any] = field(default_factory=dict)  # explicit (non-"auto") batch keys
    problem: str | None = None  # why the frameworks' strict json.load would refuse the file (it is read anyway)
    preset: str | None = None  # a framework's named preset (swift's `zero3`), not a file of this tree


# ms-swift's named DeepSpeed presets (swift/arguments/sft_args.py _init_deepspeed, rlhf_args.py): `deepspeed: zero3`
# is swift's bundled swift/config/zero3.json; `_offload` ones offload optimizer and parameters to the CPU. Their
# batch keys are all "auto".
SWIFT_DS_PRESETS = {"zero0": (0, None), "zero1": (1, None), "zero2": (2, None), "zero3": (3, None),
                    "zero2_offload": (2, "cpu"), "zero3_offload": (3, "cpu")}


@dataclass(frozen=True)
class Config:
    path: str
    text: str
    data: Any
    dialect: Dialect
    values: dict[str, Any]
    zero: ZeroInfo | None = None

    @property
    def standalone(self) -> bool:
        """`# oomfix: standalone` in a config: an alternative, not a sibling of its directory's configs."""
        return "oomfix: standalone" in self.text

    @property
    def identity(self) -> tuple[Any, ...]:
        """What makes two configs train 'the same model the same way' (DOMAIN.md section 5)."""
        d = self.data
        if self.dialect.name in ("llamafactory", "hf"):
            # the same model, the same data and the same stage (a DPO config is not a sibling of an SFT one)
            ident = (d.get("model_name_or_path") or d.get("model"), d.get("stage"), d.get("finetuning_type"),
                     _norm_data(d.get("dataset", d.get("dataset_name"))))
        elif self.dialect.name == "axolotl":
            # axolotl: `rl` names the preference stage (dpo, kto, orpo, grpo ...); `datasets` is a list of sources
            ident = (d.get("base_model"), d.get("adapter"), d.get("rl"), _norm_data(d.get("datasets")),
                     d.get("pretraining_dataset") is not None)
        elif self.dialect.name == "torchtune":
            ident = (get_path(d, ("model", "_component_")),)
        else:
            ident = ()
        if ident[:1] == (None,) or not ident or self.standalone:
            return (self.dialect.name, self.path)  # no model named: a sibling only through a launcher
        return (self.dialect.name, *ident)


def small(v: Any, budget: int = 10000) -> bool:
    """Is a parsed value at most `budget` nodes? (A YAML alias bomb is a few lines that expand to billions of nodes:
    never walked, printed or compared.)"""
    stack, n = [v], 0
    while stack:
        x = stack.pop()
        n += 1
        if n > budget:
            return False
        if isinstance(x, dict):
            stack.extend(x.values())
        elif isinstance(x, (list, tuple)):
            stack.extend(x)
    return True


def _norm_data(v: Any) -> Any:
    """A dataset setting in a comparable form: a comma list or a YAML list of names or of {path, type} sources."""
    if not small(v):
        return ("<too large to compare>", id(v))
    if isinstance(v, str):
        return tuple(sorted(x.strip() for x in v.split(",") if x.strip()))
    if isinstance(v, list):
        out = []
        for x in v:
            if isinstance(x, dict):
                out.append(str(x.get("path") or x.get("name") or x.get("data_files") or sorted(x.items())))
            else:
                out.append(str(x))
        return tuple(sorted(out))
    return v


def read_text(path: str) -> str:
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise ConfigError(f"{path}: config not found") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from None
    if p.is_dir():
        raise ConfigError(f"{path}: is a directory, not a config")
    if st.st_size > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: {st.st_size} bytes is too large for a training config")
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 (byte {e.start}); not editing it") from None


def inside(path: str, root: str = ".") -> bool:
    """Is `path` (symlinks resolved) inside the directory tree being worked on?"""
    r = os.path.realpath(root)
    p = os.path.realpath(path)
    return p == r or p.startswith(r.rstrip(os.sep) + os.sep)


def resolve_ref(ref: str, config_path: str, cwd: str | None = None) -> str | None:
    """A path written in a config: relative to the current directory, then to the config's directory and its
    ancestors (LLaMA-Factory configs name `examples/deepspeed/...` relative to the repository root)."""
    if os.path.isabs(ref):
        return ref if os.path.isfile(ref) else None
    cands = [Path(cwd or os.getcwd()) / ref]
    d = Path(config_path).resolve().parent
    for parent in [d, *d.parents]:
        cands.append(parent / ref)
    for c in cands:
        if c.is_file():
            return str(c)
    return None


# axolotl's bundled DeepSpeed files (its deepspeed_configs/ folder, fetched with `axolotl fetch deepspeed_configs`)
_AXOLOTL_DS = re.compile(r"deepspeed_configs/zero([0-3])(?:_[a-z0-9_]+)?\.json")


def zero_info(ref: Any, config_path: str) -> ZeroInfo | None:
    """What a `deepspeed:` value points at: the file (or a framework's named preset), its ZeRO stage, offload and
    explicit batch numbers."""
    if not isinstance(ref, str) or not ref.strip():
        return None
    path = resolve_ref(ref, config_path)
    m = _AXOLOTL_DS.fullmatch(ref.strip().lstrip("./"))
    if path is None and m:
        # axolotl reads `deepspeed:` as a path from where it runs (utils/config/__init__.py); its bundled
        # deepspeed_configs/ come with `axolotl fetch deepspeed_configs`, outside the project
        return ZeroInfo(ref, None, int(m.group(1)), "cpu" if "cpuoffload" in ref else None, preset="axolotl-fetch")
    if path is None and ref.strip() in SWIFT_DS_PRESETS:
        stage, off = SWIFT_DS_PRESETS[ref.strip()]
        return ZeroInfo(ref, None, stage, off, preset="ms-swift")
    if path is None:
        return ZeroInfo(ref, None)
    try:
        text = read_text(path)
        data = parse_config_text(text, path)
    except (ConfigError, EditRefused):
        return ZeroInfo(ref, path)
    relaxed = json_strictness(text) if path.lower().endswith(".json") else []
    # transformers (HfTrainerDeepSpeedConfig) and accelerate (HfDeepSpeedConfig) open the file with
    # encoding="utf-8" and json.load it; only DeepSpeed's own loader (deepspeed.runtime.config, hjson) takes
    # comments and trailing commas. So the file is read as DeepSpeed reads it, and the difference is reported.
    problem = (f"{display_path(path)} has {', '.join(relaxed)}: transformers and accelerate load a DeepSpeed config "
               f"with a strict json.load, which stops the run at start-up (DeepSpeed's own hjson loader would accept "
               f"{'the comments and commas' if relaxed != ['a UTF-8 BOM'] else 'it'}); make it plain JSON"
               if relaxed else None)
    stage = get_path(data, ("zero_optimization", "stage"))
    off = get_path(data, ("zero_optimization", "offload_optimizer", "device"))
    batch = {k: data[k] for k in ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps")
             if isinstance(data, dict) and k in data and data[k] != "auto"}
    return ZeroInfo(ref, path, stage if isinstance(stage, int) and not isinstance(stage, bool) else None,
                    off if isinstance(off, str) else None, batch, problem)


_zero_info = zero_info  # the former name


def load_config(path: str) -> Config:
    text = read_text(path)
    try:
        data = parse_config_text(text.lstrip("\ufeff"), path)
    except EditRefused as e:
        raise ConfigError(str(e)) from None
    dialect = detect(data, path)
    if dialect is None:
        raise ConfigError(f"{path}: not a training config oomfix knows (LLaMA-Factory, HF Trainer, axolotl, "
                          f"torchtune, DeepSpeed)")
    values = read_canonical(data, dialect)
    zero = zero_info(values.get("zero_config"), path) if dialect is not DEEPSPEED else None
    if zero is not None:
        values["zero_stage"] = zero.stage
        values["offload"] = zero.offload
    return Config(path, text, data, dialect, values, zero)


def try_load(path: str) -> Config | None:
    try:
        return load_config(path)
    except ConfigError:
        return None


def walk(paths: Sequence[str]) -> Iterable[Path]:
    for p in paths:
        root = Path(p)
        if root.is_file():
            yield root
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.startswith("."))
            for f in sorted(filenames):
                yield Path(dirpath) / f


def launchers_in(paths: Sequence[str]) -> "Launchers":
    out = []
    for f in walk(paths):
        if f.suffix == ".sh":
            try:
                out.append(parse_launcher(f))
            except Exception:  # noqa: BLE001 - an unreadable script is not a launcher we can judge
                continue
    return Launchers(out)


def same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)


def display_path(p: str | os.PathLike[str]) -> str:
    """Relative to the current directory when below it (how people name files), else absolute."""
    rel = os.path.relpath(p)
    return rel if not rel.startswith("..") else os.path.abspath(p)


def siblings(primary: Config, launchers: Sequence[Launcher], search_dirs: Sequence[str] = ()) -> list[Config]:
    """Configs that must get the same fix: same directory and identity, or started side by side by one launcher."""
    found: dict[str, Config] = {os.path.realpath(primary.path): primary}
    pdir = Path(primary.path).resolve().parent
    for f in sorted(pdir.iterdir()):
        if f.suffix in (".yaml", ".yml") and f.is_file() and os.path.realpath(f) not in found:
            c = try_load(display_path(f))
            if c is not None and c.dialect is primary.dialect and c.identity == primary.identity:
                found[os.path.realpath(f)] = c
    for lau in launchers:
        paths = [job_path(j, j.config) for j in lau.jobs if j.config]
        paths = [p for p in paths if p]
        if any(same_file(p, primary.path) for p in paths):
            for p in paths:
                if os.path.realpath(p) not in found:
                    c = try_load(display_path(p))
                    if c is not None and c.dialect is primary.dialect:
                        found[os.path.realpath(p)] = c
    ordered = [primary] + sorted((c for k, c in found.items() if c is not primary), key=lambda c: c.path)
    return ordered


class Launchers(tuple):  # type: ignore[type-arg]
    """The launcher scripts of a tree. Which job starts a config is asked for every config, several times, so the
    answer is indexed once (real path of the config -> the first job that names it)."""

    _index: dict[str, tuple[Launcher, Any]] | None = None

    def job_of(self, config_path: str) -> tuple[Launcher, Any] | None:
        if self._index is None:
            index: dict[str, tuple[Launcher, Any]] = {}
            for lau in self:
                for j in lau.jobs:
                    if j.config:
                        p = job_path(j, j.config)
                        if p:
                            index.setdefault(os.path.realpath(p), (lau, j))
            self._index = index
        return self._index.get(os.path.realpath(config_path))


def job_for_config(config_path: str, launchers: Sequence[Launcher]) -> tuple[Launcher, Any] | None:
    """The launcher and job that start a config, or None."""
    index = launchers if isinstance(launchers, Launchers) else Launchers(launchers)
    return index.job_of(config_path)
