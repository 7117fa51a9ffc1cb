"""CPU sweep for `oomfix fit`: measure the peak memory of a few genuine training steps of tiny HF models.

NOT part of the package or of CI: it needs `transformers` (pip install transformers, in a venv of its own) and
torch. It builds small decoder models from a config (random weights, nothing downloaded), trains each setting for
two optimizer steps of two micro-steps (gradient accumulation 2, AdamW, fp32, SDPA attention, no padding mask),
and measures the peak with torch.profiler's allocator events (`profile_memory=True`: every `[memory]` event is one
CPU-allocator allocation (+bytes) or free (-bytes); their running sum from before the model is built is the bytes
allocated, the CPU counterpart of torch.cuda.memory_allocated). It also keeps, for each setting, every allocation
that set a new high ("record highs": allocated before it, and its size), so a test can replay a simulated OOM at any
capacity below the peak exactly as the caching allocator would report it (allocated + requested > capacity).

    /tmp/venv/bin/python tests/benchmarks/fit_cpu_sweep.py > tests/data/fit_cpu_sweep.json
"""
from __future__ import annotations

import json
import platform
import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile

ARCHS = {
    # a tiny Qwen3 (q/k RMSNorm, GQA, untied head) and a tiny Llama (no q/k norm, MHA, tied embeddings)
    "qwen3-tiny": dict(family="qwen3", vocab_size=8192, hidden_size=256, intermediate_size=768, num_hidden_layers=4,
                       num_attention_heads=4, num_key_value_heads=2, head_dim=64, tie_word_embeddings=False),
    "llama-tiny": dict(family="llama", vocab_size=4096, hidden_size=384, intermediate_size=1024, num_hidden_layers=3,
                       num_attention_heads=6, num_key_value_heads=6, tie_word_embeddings=True),
}
GRID = {
    "qwen3-tiny": [(m, s, gc) for s in (128, 256, 512) for m in (1, 2, 4, 8) for gc in (False, True)],
    "llama-tiny": [(m, s, gc) for s in (256,) for m in (1, 2, 4) for gc in (False, True)],
}
# pure bf16 (weights, gradients and AdamW states in bf16, as LLaMA-Factory's pure_bf16): half-precision activations
BF16_GRID = [(m, s, gc) for s in (256,) for m in (1, 2, 4) for gc in (False, True)]


def build(name: str):
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen3Config, Qwen3ForCausalLM

    spec = dict(ARCHS[name])
    family = spec.pop("family")
    cls, mcls = (Qwen3Config, Qwen3ForCausalLM) if family == "qwen3" else (LlamaConfig, LlamaForCausalLM)
    cfg = cls(max_position_embeddings=4096, attn_implementation="sdpa", **spec)
    return mcls(cfg)


def loss_of(model, ids):
    # as HF Trainer's compute_loss: only the loss leaves the function, the logits are dropped before backward
    return model(input_ids=ids, labels=ids).loss


def one(name: str, micro: int, seq: int, gc: bool, dtype: str = "fp32") -> dict:
    torch.manual_seed(0)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        model = build(name)
        if dtype == "bf16":
            model = model.to(torch.bfloat16)
        model.train()
        if gc:
            model.gradient_checkpointing_enable()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        vocab = model.config.vocab_size
        for _ in range(2):  # optimizer steps
            for _ in range(2):  # gradient accumulation 2
                ids = torch.randint(0, vocab, (micro, seq))
                (loss_of(model, ids) / 2).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    events = sorted(((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                     if e.name() == "[memory]"), key=lambda t: t[0])
    total, peak, highs = 0, 0, []
    for _, n in events:
        if n > 0 and total + n > peak:
            highs.append((total, n))
        total += n
        peak = max(peak, total)
    n_params = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    highs = [h for h in highs if h[0] + h[1] >= 0.3 * peak]
    return {"arch": name, "dtype": dtype, "micro_batch": micro, "seq_len": seq, "grad_checkpointing": gc,
            "peak_bytes": peak, "params": n_params, "record_highs": highs}


def main() -> None:
    torch.set_num_threads(1)  # a shared machine
    t0 = time.time()
    points = []
    for name, grid in GRID.items():
        for micro, seq, gc in grid:
            points.append(one(name, micro, seq, gc))
            print(f"{name} micro {micro} seq {seq} gc {gc}: {points[-1]['peak_bytes'] / 2**20:.1f} MiB",
                  file=sys.stderr, flush=True)
    for micro, seq, gc in BF16_GRID:
        points.append(one("qwen3-tiny", micro, seq, gc, "bf16"))
        print(f"qwen3-tiny bf16 micro {micro} seq {seq} gc {gc}: {points[-1]['peak_bytes'] / 2**20:.1f} MiB",
              file=sys.stderr, flush=True)
    import transformers

    json.dump({"how": "tests/benchmarks/fit_cpu_sweep.py: torch.profiler profile_memory=True, running sum of the CPU allocator's "
                      "[memory] events from before the model is built; fp32 (and pure bf16 points: dtype bf16), AdamW "
                      "(foreach), SDPA, gradient accumulation 2, two optimizer steps",
               "torch": torch.__version__, "transformers": transformers.__version__,
               "python": platform.python_version(), "seconds": round(time.time() - t0, 1),
               "archs": ARCHS, "points": points}, sys.stdout, indent=None, separators=(",", ":"))
    sys.stdout.write("\n")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--one":
        r = one(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == "1",
                sys.argv[6] if len(sys.argv) > 6 else "fp32")
        print(r["peak_bytes"] / 2**20, len(r["record_highs"]))
    else:
        main()
