"""An analytic per-device memory model of LLM training: model states, activations, logits, overhead.

Every term names where its formula comes from:

* Model states (Rajbhandari et al. 2020, "ZeRO", section 3: mixed-precision Adam keeps 2 + 2 + 12 bytes per
  parameter: fp16/bf16 weights and gradients, fp32 master weights and two moments; K = 12). Stage 1 keeps
  2P + 2P + KP/N, stage 2 2P + (2 + K)P/N, stage 3 (2 + 2 + K)P/N (ZeRO, figure 1). DeepSpeed's own estimators
  are upper bounds that also count buffers; they are exposed here for the tests:
  `estimate_zero2_model_states_mem_needs` (deepspeed/runtime/zero/stage_1_and_2.py: GPU 4P + 16P/N, or 2P with
  optimizer offload) and `estimate_zero3_model_states_mem_needs` (deepspeed/runtime/zero/stage3.py: GPU
  4L + 18P/N, 4L + 2P/N with optimizer offload, 4L with parameter offload, L the largest layer); the offload cases
  and the gathered largest layer of stage 3 follow them. Without DeepSpeed, HF/LLaMA-Factory mixed precision keeps
  fp32 weights, fp32 gradients, Adam moments and a bf16 copy: 18 bytes per parameter, `pure_bf16` 8 (LLaMA-Factory
  README, "Hardware Requirement"). FSDP full_shard is counted as ZeRO-3, shard_grad_op as ZeRO-2.
* LoRA / QLoRA: the frozen base at 2 bytes (bf16) or bits/8 (QLoRA: the decoder's linears; embeddings, LM head
  and norms stay bf16) per parameter, the adapters (r x (in + out) per linear, every linear of every layer) at
  full optimizer cost.
* Activations per decoder layer (Korthikanti et al. 2022, "Reducing Activation Recomputation in Large Transformer
  Models", section 4.1: count the tensors autograd saves for backward, s x b x h x bytes each, plus 5 a s^2 b for
  the attention scores, softmax and dropout). Here counted for a Llama/Qwen decoder as Hugging Face writes it:
  RMSNorm (its fp32 upcast, the normalised input, the output), q/k/v/o projections, RoPE'd q and k, v and the
  attention output that SDPA/flash attention save, the output projection's input, the SwiGLU MLP's gate, activation,
  up and product (4 i / h); q/k RMSNorm for Qwen3. Flash / memory-efficient SDPA attention saves no s^2 term;
  eager attention saves the fp32 softmax (and its cast). Gradient checkpointing keeps one layer input per layer and
  recomputes one layer's full activations during backward (Chen et al. 2016; Korthikanti et al. section 5).
* Logits: micro x seq x vocab. transformers' ForCausalLMLoss upcasts the logits to fp32; cross-entropy saves its
  fp32 log-softmax and backward builds two more fp32 tensors of that size: 12 bytes per logit at the peak.
* Overhead: the CUDA context, cuBLAS workspaces and NCCL buffers are outside PyTorch's allocator; the OOM message's
  own numbers (allocated + reserved + free) say what the allocator could use, else ~1 GiB is held back.

The peak is states + activations + logits at the start of backward (measured so on the CPU sweep).
The absolute activation size of a given trainer varies (fused kernels, casts, allocator rounding), so one scale on
activations is left free: `oomfix.fit` calibrates it from the OOM message.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from oomfix.architectures import Architecture

GIB = 1 << 30
CUDA_RESERVED = 1 * GIB  # CUDA context + NCCL + cuBLAS workspaces, outside PyTorch's allocator (no OOM numbers)


@dataclass(frozen=True)
class Setup:
    """One training setup, per device."""

    arch: Architecture
    micro_batch: int
    seq_len: int
    grad_checkpointing: bool = False
    world_size: int = 1
    zero_stage: int = 0  # 0: DDP / no DeepSpeed; 1-3 ZeRO (FSDP full_shard = 3, shard_grad_op = 2)
    deepspeed: bool = False
    offload_optimizer: bool = False
    offload_params: bool = False
    precision: str = "bf16"  # bf16 | fp16 (mixed), pure_bf16, fp32
    finetuning: str = "full"  # full | lora | qlora | freeze
    lora_rank: int = 8
    quant_bits: int = 4
    flash: bool = True  # flash / memory-efficient SDPA: no s^2 attention term
    device: str = "cuda"
    # a fused / chunked linear cross-entropy (Liger's fused_linear_cross_entropy, Apple's Cut Cross-Entropy,
    # torchtune's LinearCrossEntropyLoss) never materialises the micro x seq x vocab logits
    fused_ce: bool = False

    def with_(self, **kw: object) -> "Setup":
        return replace(self, **kw)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Estimate:
    """Per-device peak memory of one setup, in bytes, by part."""

    states: int
    activations: int  # decoder layers (and the final norm)
    logits: int
    step_transient: int  # the optimizer step's temporaries
    scale: float = 1.0  # calibrated scale on activations + logits

    @property
    def act_total(self) -> float:
        return self.scale * (self.activations + self.logits)

    @property
    def peak(self) -> int:
        return int(max(self.states + self.act_total, self.states + self.step_transient))

    def breakdown(self) -> dict[str, float]:
        return {"model_states_gib": self.states / GIB, "activations_gib": self.scale * self.activations / GIB,
                "logits_gib": self.scale * self.logits / GIB, "peak_gib": self.peak / GIB, "scale": self.scale}


def _bytes_per_param(precision: str) -> tuple[float, float, float]:
    """(weights, gradients, optimizer incl. master weights) bytes per trainable parameter, Adam."""
    if precision == "fp32":
        return 4, 4, 8
    if precision == "pure_bf16":
        return 2, 2, 4
    return 2, 2, 12


def model_states(s: Setup) -> tuple[int, int]:
    """(bytes of model states on one device, local fp32 optimizer parameters) for the setup."""
    a = s.arch
    n = s.world_size if s.zero_stage else 1
    if s.finetuning in ("lora", "qlora", "freeze"):
        total = a.params()
        trainable = a.lora_params(s.lora_rank) if s.finetuning != "freeze" else 2 * a.layer_params()
        frozen = total - (trainable if s.finetuning == "freeze" else 0)
        half = 4 if s.precision == "fp32" else 2
        if s.finetuning == "qlora":
            # bitsandbytes quantises the decoder's linear layers; embeddings, LM head and norms stay in half precision
            quantised = a.layers * sum(x * y for x, y in a.linears())
            frozen_dev = quantised * s.quant_bits / 8 + (frozen - quantised) * half
        else:
            frozen_dev = frozen * half / (n if s.zero_stage == 3 else 1)
        w, g, o = _bytes_per_param(s.precision)
        # adapters: LLaMA-Factory upcasts trainable parameters to fp32 (weights 4, grads 4, Adam 8)
        tw, tg, to = (4, 4, 8) if s.precision != "pure_bf16" else (w, g, o)
        train_dev = trainable * (tw + (tg + to) / n)
        return int(frozen_dev + train_dev), int(trainable / n)
    p = a.params()
    w, g, o = _bytes_per_param(s.precision)
    if not s.deepspeed and s.zero_stage == 0:
        if s.precision in ("bf16", "fp16"):
            # HF Trainer / LLaMA-Factory AMP: fp32 weights 4 + fp32 grads 4 + Adam 8 + half copy 2 = 18 (LF README)
            return 18 * p, p
        return int((w + g + o) * p), p
    if s.zero_stage == 3:
        largest = 4 * a.largest_layer_params()  # DeepSpeed stage3.py: largest_layer_memory = 4 * largest_layer_params
        if s.offload_params:
            return largest, 0
        if s.offload_optimizer:
            return int(largest + 2 * p / n), 0  # DeepSpeed stage3.py: largest_layer_memory + 2 P / N
        return int(largest + (w + g + o) * p / n), p // n  # ZeRO P_os+g+p: (2 + 2 + K) P / N
    if s.zero_stage in (1, 2):
        if s.offload_optimizer:
            return int(w * p), 0  # DeepSpeed stage_1_and_2.py with cpu_offload: gpu_mem = 2 * total_params
        if s.zero_stage == 1:
            return int((w + g) * p + o * p / n), p // n  # ZeRO P_os: 2P + 2P + K P / N
        return int(w * p + (g + o) * p / n), p // n  # ZeRO P_os+g: 2P + (2 + K) P / N
    return int((w + g + o) * p), p  # DeepSpeed stage 0: 2 + 2 + 12


def deepspeed_zero2_estimate(total_params: int, num_gpus: int, cpu_offload: bool) -> int:
    """GPU bytes from DeepSpeed's `estimate_zero2_model_states_mem_needs` (deepspeed/runtime/zero/
    stage_1_and_2.py), one node: its conservative upper bound (full half-precision gradients as well)."""
    return 2 * total_params if cpu_offload else 4 * total_params + int(16 * total_params / num_gpus)


def deepspeed_zero3_estimate(total_params: int, largest_layer_params: int, num_gpus: int, cpu_offload: bool,
                             cpu_offload_params: bool) -> int:
    """GPU bytes from DeepSpeed's `estimate_zero3_model_states_mem_needs` (deepspeed/runtime/zero/stage3.py)."""
    largest = 4 * largest_layer_params
    if cpu_offload:
        return largest if cpu_offload_params else largest + int(2 * total_params / num_gpus)
    return largest + int(18 * total_params / num_gpus)


def _act_bytes(s: Setup) -> int:
    return 4 if s.precision == "fp32" else 2


def layer_units(s: Setup) -> float:
    """Saved activations of one decoder layer in units of s*b*h*bytes (see the module docstring for the list)."""
    a = s.arch
    p = _act_bytes(s)
    norm = 3.0 if p == 4 else 4.0  # fp32: input, normalised, output; half: fp32 upcast (2 units) + normalised + output
    q, kv = a.q_dim / a.hidden, a.kv_dim / a.hidden
    attn = 3 * q + 2 * kv  # RoPE'd q, attention output, o_proj input; RoPE'd k, v
    if a.qk_norm:
        attn += (2.0 if p == 4 else 3.0) * (q + kv)
    mlp = 4 * a.intermediate / a.hidden
    return 2 * norm + attn + mlp


def activations(s: Setup) -> int:
    """Bytes of saved activations at the backward peak: the decoder layers and the final norm."""
    a = s.arch
    p = _act_bytes(s)
    sbh = s.seq_len * s.micro_batch * a.hidden * p
    layer = sbh * layer_units(s)
    if not s.flash:
        # eager attention: the fp32 softmax output and its half-precision cast (Korthikanti's 5 a s^2 b, no dropout)
        layer += s.micro_batch * a.heads * s.seq_len ** 2 * (4 + (p if p < 4 else 0))
    final_norm = sbh * (3.0 if p == 4 else 4.0)
    if s.grad_checkpointing:
        # the peak is either at the start of backward (all layer inputs + the logits' cross-entropy tensors) or
        # during one layer's recompute, after the logits' tensors are freed: inputs + max(logits, one layer)
        return int(a.layers * sbh + final_norm + max(0, layer - logits(s)))
    return int(a.layers * layer + final_norm)


def logits(s: Setup) -> int:
    """Bytes of the logits and the cross-entropy's fp32 tensors (12 bytes per token and vocabulary entry)."""
    if s.fused_ce:
        return 0  # chunks of a few thousand tokens at a time: negligible beside the layers' activations
    return 12 * s.micro_batch * s.seq_len * s.arch.vocab


def estimate(s: Setup, scale: float = 1.0) -> Estimate:
    """The setup's per-device estimate; `scale` multiplies activations and logits (the calibration on an OOM)."""
    states, opt_local = model_states(s)
    # the optimizer step's temporaries are not counted: torch 2.13's foreach AdamW stayed below the backward
    # peak in every setting of the CPU sweep (tests/data/fit_cpu_sweep.json), even at micro 1
    return Estimate(states, activations(s), logits(s), 0, scale)

