"""Decoder architectures for the memory model: read from a model's local `config.json`, else from a table of
popular models whose numbers are copied from their published `config.json` on the Hugging Face Hub.

Sources (each entry names its Hub repository; values transcribed from the config.json published there):
hidden_size, intermediate_size, num_hidden_layers, num_attention_heads, num_key_value_heads, head_dim (when the
file sets it, else hidden_size / num_attention_heads), vocab_size, tie_word_embeddings, attention_bias (Qwen2 has
q/k/v biases), and whether the attention normalises q and k per head (Qwen3's q_norm / k_norm).
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from typing import Any

from oomfix.errors import ConfigError


@dataclass(frozen=True)
class Architecture:
    name: str
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied: bool
    qkv_bias: bool = False
    qk_norm: bool = False
    source: str = ""

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    def linears(self) -> tuple[tuple[int, int], ...]:
        """(in, out) of every linear layer of one decoder layer: q, k, v, o, gate, up, down."""
        h, i = self.hidden, self.intermediate
        return ((h, self.q_dim), (h, self.kv_dim), (h, self.kv_dim), (self.q_dim, h), (h, i), (h, i), (i, h))

    def layer_params(self) -> int:
        n = sum(a * b for a, b in self.linears()) + 2 * self.hidden  # two RMSNorm weights
        if self.qkv_bias:
            n += self.q_dim + 2 * self.kv_dim
        if self.qk_norm:
            n += 2 * self.head_dim
        return n

    def params(self) -> int:
        emb = self.vocab * self.hidden
        return emb * (1 if self.tied else 2) + self.layers * self.layer_params() + self.hidden

    def largest_layer_params(self) -> int:
        """The largest single module, as DeepSpeed's ZeRO-3 estimator counts it (the embedding, for LLMs)."""
        return max(self.vocab * self.hidden, max(a * b for a, b in self.linears()))

    def lora_params(self, rank: int) -> int:
        """LoRA on every linear of every decoder layer (LLaMA-Factory's `lora_target: all`): r x (in + out) each."""
        return self.layers * sum(rank * (a + b) for a, b in self.linears())


def _arch(name: str, repo: str, h: int, i: int, layers: int, heads: int, kv: int, vocab: int, tied: bool,
          head_dim: int | None = None, qkv_bias: bool = False, qk_norm: bool = False) -> Architecture:
    return Architecture(name, h, i, layers, heads, kv, head_dim or h // heads, vocab, tied, qkv_bias, qk_norm,
                        f"https://huggingface.co/{repo}/blob/main/config.json")


# name -> architecture; names are matched after normalisation (see `_norm`)
TABLE: dict[str, Architecture] = {a.name: a for a in (
    # Qwen3 dense (q_norm / k_norm, explicit head_dim 128)
    _arch("qwen3-4b", "Qwen/Qwen3-4B", 2560, 9728, 36, 32, 8, 151936, True, 128, qk_norm=True),
    _arch("qwen3-8b", "Qwen/Qwen3-8B", 4096, 12288, 36, 32, 8, 151936, False, 128, qk_norm=True),
    _arch("qwen3-14b", "Qwen/Qwen3-14B", 5120, 17408, 40, 40, 8, 151936, False, 128, qk_norm=True),
    _arch("qwen3-32b", "Qwen/Qwen3-32B", 5120, 25600, 64, 64, 8, 151936, False, 128, qk_norm=True),
    # Qwen2.5 / Qwen2 (q/k/v biases)
    _arch("qwen2.5-3b", "Qwen/Qwen2.5-3B", 2048, 11008, 36, 16, 2, 151936, True, qkv_bias=True),
    _arch("qwen2.5-7b", "Qwen/Qwen2.5-7B", 3584, 18944, 28, 28, 4, 152064, False, qkv_bias=True),
    _arch("qwen2.5-14b", "Qwen/Qwen2.5-14B", 5120, 13824, 48, 40, 8, 152064, False, qkv_bias=True),
    _arch("qwen2.5-32b", "Qwen/Qwen2.5-32B", 5120, 27648, 64, 40, 8, 152064, False, qkv_bias=True),
    _arch("qwen2-7b", "Qwen/Qwen2-7B", 3584, 18944, 28, 28, 4, 152064, False, qkv_bias=True),
    # Llama 2 / 3
    _arch("llama-2-7b", "meta-llama/Llama-2-7b-hf", 4096, 11008, 32, 32, 32, 32000, False),
    _arch("llama-2-13b", "meta-llama/Llama-2-13b-hf", 5120, 13824, 40, 40, 40, 32000, False),
    _arch("llama-3-8b", "meta-llama/Meta-Llama-3-8B", 4096, 14336, 32, 32, 8, 128256, False),
    _arch("llama-3.1-8b", "meta-llama/Llama-3.1-8B", 4096, 14336, 32, 32, 8, 128256, False),
    _arch("llama-3.2-3b", "meta-llama/Llama-3.2-3B", 3072, 8192, 28, 24, 8, 128256, True, 128),
    # Mistral
    _arch("mistral-7b-v0.3", "mistralai/Mistral-7B-v0.3", 4096, 14336, 32, 32, 8, 32768, False),
    _arch("mistral-7b-v0.1", "mistralai/Mistral-7B-v0.1", 4096, 14336, 32, 32, 8, 32000, False),
    # Gemma (tied embeddings, head_dim 256)
    _arch("gemma-7b", "google/gemma-7b", 3072, 24576, 28, 16, 16, 256000, True, 256),
    # DeepSeek dense
    _arch("deepseek-llm-7b", "deepseek-ai/deepseek-llm-7b-base", 4096, 11008, 30, 32, 32, 102400, False),
)}

_SUFFIXES = re.compile(r"-(instruct|chat|base|hf|it)(?=-|$)")


def _norm(name: str) -> str:
    n = name.rstrip("/").rsplit("/", 1)[-1].lower()
    n = n.replace("meta-llama-3", "llama-3").replace("_", "-")
    n = _SUFFIXES.sub("", n)
    n = re.sub(r"-(\d{4})$", "", n)  # Qwen2.5-7B-Instruct-2507 and similar date tags
    return n


def lookup(name: str) -> Architecture | None:
    """The table's architecture for a model name or path (`Qwen/Qwen3-14B`, `/models/Qwen3-14B-Instruct`)."""
    n = _norm(name)
    if n in TABLE:
        return TABLE[n]
    n2 = re.sub(r"-v\d+(\.\d+)?$", "", n)
    return TABLE.get(n2) or TABLE.get(n2 + "-v0.3" if n2.startswith("mistral") else "")


def from_config_json(data: Any, name: str) -> Architecture:
    """An architecture from a Hugging Face config.json (its `text_config` for multimodal wrappers)."""
    if isinstance(data, dict):
        _refuse_unmodelled(data, name)
    if isinstance(data, dict) and isinstance(data.get("text_config"), dict) and "hidden_size" not in data:
        data = data["text_config"]
    if not isinstance(data, dict):
        raise ConfigError(f"{name}: config.json is not a JSON object")
    _refuse_unmodelled(data, name)
    try:
        h = int(data["hidden_size"])
        heads = int(data["num_attention_heads"])
        for key in ("hidden_size", "num_attention_heads", "intermediate_size", "num_hidden_layers", "vocab_size"):
            if not 0 < int(data[key]) < 1 << 24:
                raise ValueError(f"{key} = {data[key]!r} is not a plausible size")
        arch = Architecture(
            name, h, int(data["intermediate_size"]), int(data["num_hidden_layers"]), heads,
            int(data.get("num_key_value_heads") or heads), int(data.get("head_dim") or h // heads),
            int(data["vocab_size"]), bool(data.get("tie_word_embeddings", False)),
            bool(data.get("attention_bias", str(data.get("model_type", "")).startswith("qwen2"))),
            str(data.get("model_type", "")).startswith("qwen3"), "config.json")
    except (KeyError, TypeError, ValueError, ZeroDivisionError, OverflowError) as e:
        raise ConfigError(f"{name}: config.json lacks what the memory model needs ({e})") from None
    return arch


# config.json keys of architectures the dense-decoder formulas do not describe (the model must say "cannot say",
# never a confident number): mixture-of-experts (transformers' Mixtral/gpt-oss `num_local_experts`, Qwen2/3-MoE
# `num_experts`, DeepSeek-V2/V3 `n_routed_experts`), multimodal towers (`vision_config`, `audio_config`), and
# state-space hybrids (Mamba, Jamba, Falcon-H1)
_MOE_KEYS = ("num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts")
_TOWER_KEYS = ("vision_config", "audio_config", "speech_config")
_SSM_TYPES = ("mamba", "jamba", "falcon_h1", "rwkv", "zamba", "nemotron_h")


def _refuse_unmodelled(data: dict[str, Any], name: str) -> None:
    moe = next((k for k in _MOE_KEYS if isinstance(data.get(k), int) and not isinstance(data.get(k), bool)
                and data[k] > 1), None)
    if moe is not None:
        raise ConfigError(f"{name}: a mixture-of-experts model ({moe} = {data[moe]}); the memory model covers dense "
                          f"decoders only")
    tower = next((k for k in _TOWER_KEYS if isinstance(data.get(k), dict)), None)
    if tower is not None:
        raise ConfigError(f"{name}: a multimodal model (it has a {tower}); the memory model covers the text decoder "
                          f"only")
    mt = str(data.get("model_type", "")).lower()
    if any(t in mt for t in _SSM_TYPES):
        raise ConfigError(f"{name}: model_type {mt!r} has state-space layers; the memory model covers "
                          f"attention-only decoders")


def _local_dir(model: str, near: str | None) -> str | None:
    """Where `model` is a local model directory: as given (relative to the current directory, as the trainer
    resolves it when started from the project root), else, for a relative path, relative to the directory of the
    config that names it or one of its parents (`oomfix fit` run from elsewhere than the project root)."""
    path = os.path.expanduser(model)
    if os.path.isfile(os.path.join(path, "config.json")):
        return path
    if os.path.isabs(path) or near is None:
        return None
    d = os.path.dirname(os.path.abspath(near))
    while True:
        cand = os.path.join(d, path)
        if os.path.isfile(os.path.join(cand, "config.json")):
            return cand
        up = os.path.dirname(d)
        if up == d:
            return None
        d = up


def resolve(model: str | None, near: str | None = None) -> Architecture | None:
    """The model's local config.json when `model` is a directory that has one (see `_local_dir`; `near` is the
    config file that names it), else the table; None if unknown."""
    if not model:
        return None
    local = _local_dir(model, near)
    cfg = os.path.join(local or model, "config.json")
    if local is not None:
        try:
            with open(cfg, encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, ValueError, RecursionError) as e:
            raise ConfigError(f"{cfg}: cannot read: {e}") from None
        return from_config_json(data, cfg)
    return lookup(model)
