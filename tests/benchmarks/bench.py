#!/usr/bin/env python3
"""Benchmark oomfix against grep and wc on generated multi-GB logs (not part of the unit tests).

usage: python tests/benchmarks/bench.py [--sizes 100,1000] [--skip-check] [--keep DIR]

For each size (MB) and variant it generates a realistic log into a temporary directory (LLaMA-Factory start-up,
HF Trainer block, tqdm bars with carriage returns, interleaved [rankN]: warnings, loss dicts, NCCL INFO lines, and a
failure: a CUDA OOM on one rank then the SIGTERM cascade and the ChildFailedError summary; variant "middle" has the
failure half-way followed by NCCL-timeout noise), then measures on the same file in the same run:
  oomfix diagnose --format json (wall time, peak RSS), both engines (hyperscan, pure Python)
  grep -c -E with an alternation of the markers oomfix looks for, and wc -l (the floor)
It also measures start-up (`oomfix --version` against `python -c pass`) and `oomfix check` on a generated tree of
500 configs, 50 launchers and 200 logs of 1 MB. Files are deleted afterwards unless --keep is given.

The "busy" log (--busy MB) mixes in the ordinary lines a long DeepSpeed/HF run prints that contain marker-like words
but are no failure (DeepSpeed see_memory_usage stats, checkpoint saves, "***** Running Evaluation *****" blocks,
eval_loss dicts, tokenizer "indexing errors" warnings, loss-scale OVERFLOW! lines), at realistic rates, and ends in a
CUDA OOM. The per-kind table (--kinds N) times N lines of each ordinary kind alone (no failure: class "none").
Smaller figures for quick iterations: --sizes 50 --busy 50 --kinds 20000 --reps 1; --only busy,kinds.
"""
from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "fixtures" / "constructed"))

import make  # noqa: E402
from line_kinds import _t  # noqa: E402
# the ordinary kinds the mixture benchmark shares (line_kinds.py holds their producers' wording)
from line_kinds import ds_memory as k_memory, ds_overflow as k_overflow, hf_loss as k_loss  # noqa: E402
from line_kinds import hf_tokenizer as k_tokenizer, nccl_channel as k_nccl_info  # noqa: E402
from oomfix.patterns import MARKERS  # noqa: E402

HEAD = make.lf_header("configs/qwen3_14b_a.yaml", world=8, micro=1, accum=16, steps=30000)


def _block(step: int) -> str:
    out = []
    for s in range(step, step + 20):
        bar = "".join(f"\r {p:3d}%|█▌        | {s}/30000 [1:{s % 60:02d}:{p % 60:02d}<40:00:00,  4.80s/it]"
                      for p in range(0, 100, 9))
        out.append(bar)
        out.append(f"\n[rank{s % 8}]: /usr/lib/python3.11/site-packages/torch/utils/checkpoint.py:86: UserWarning: "
                   f"None of the inputs have requires_grad=True. Gradients will be None\n")
        out.append(f"gpu-node-01:{4100 + s % 8}:{5200 + s % 8} [{s % 8}] NCCL INFO comm 0x55d0c8 rank {s % 8} nranks 8 "
                   f"cudaDev {s % 8} busId 1b000 commId 0x3f2a - Init COMPLETE\n")
        if s % 5 == 0:
            out.append(f"{{'loss': {1.0 + (s % 17) / 10:.4f}, 'grad_norm': 0.81, 'learning_rate': 9.1e-06, "
                       f"'epoch': {s / 30000:.2f}}}\n")
    return "".join(out)


def _tail(step: int) -> str:
    return make.bars(step, 30000, start=step - 2) + make.cuda_oom_rank2("configs/qwen3_14b_a.yaml").split(
        "Total optimization steps = 51\n", 1)[1].split(make.bars(3, 51), 1)[1]


NOISE = ("[rank{r}]:[E1127 13:30:00.000000 8100 ProcessGroupNCCL.cpp:632] [Rank {r}] Watchdog caught collective "
         "operation timeout: WorkNCCL(SeqNum=9001, OpType=ALLREDUCE, NumelIn=1, NumelOut=1, Timeout(ms)=1800000) ran "
         "for 1800012 milliseconds before timing out.\n")


def generate(path: Path, size_mb: int, variant: str = "end") -> None:
    target = size_mb << 20
    block = _block(1000).encode()
    info = ("gpu-node-01:4101:5201 [1] NCCL INFO Channel 00/0 : 1[1] -> 2[2] via P2P/IPC/read\n" * 200).encode()
    with open(path, "wb") as f:
        f.write(HEAD.encode())
        written = len(HEAD)
        half = target // 2 if variant == "middle" else target - (64 << 10)
        while written < half:
            f.write(block)
            written += len(block)
        f.write(_tail(2500).encode())
        if variant == "middle":
            n = 0
            while written < target:
                f.write(info)
                written += len(info)
                n += 1
                if n % 50 == 0:  # a watchdog line now and then: candidates in the noise
                    f.write(NOISE.format(r=n % 8).encode())


# --- the ordinary lines of a long run (producers: transformers trainer.py / LLaMA-Factory logging, DeepSpeed
# runtime/utils.py, tokenization_utils_base.py, NCCL debug.cc); the kinds the mixtures share come from line_kinds.py ---
def k_checkpoint(i: int) -> str:
    return (f"[INFO|trainer.py:3705] {_t(i)} >> Saving model checkpoint to saves/qwen3-14b/lora/sft/"
            f"checkpoint-{i * 500}\n")


def k_eval_block(i: int) -> str:
    return (f"[INFO|trainer.py:3831] {_t(i)} >> \n***** Running Evaluation *****\n"
            f"[INFO|trainer.py:3833] {_t(i)} >>   Num examples = {1000 + i % 7}\n"
            f"[INFO|trainer.py:3836] {_t(i)} >>   Batch size = 8\n")


def k_eval_loss(i: int) -> str:
    return (f"{{'eval_loss': {1 + i % 997 / 1000:.4f}, 'eval_runtime': {12 + i % 13:.4f}, 'eval_samples_per_second': "
            f"{81 + i % 9:.3f}, 'eval_steps_per_second': {10 + i % 5:.3f}, 'epoch': {i / 3000:.2f}}}\n")


KINDS = {"checkpoint save": k_checkpoint, "Running Evaluation": k_eval_block, "eval_loss dict": k_eval_loss,
         "tokenizer warning": k_tokenizer, "see_memory_usage": k_memory, "OVERFLOW!": k_overflow,
         "NCCL INFO": k_nccl_info, "{'loss': ...}": k_loss}


def _busy_block(step: int) -> str:
    """20 training steps of a busy DeepSpeed + HF run: about a third of the lines are ordinary marker-like lines."""
    out = [_block(step)]
    for s in range(step, step + 20):
        out.append(k_memory(s))  # DeepSpeed memory stats every step (3 lines)
        if s % 3 == 0:
            out.append(k_tokenizer(s))
        if s % 4 == 0:
            out.append(k_overflow(s))
    out.append(k_eval_block(step) + k_eval_loss(step))  # evaluate and save every 20 steps
    out.append(k_checkpoint(step))
    return "".join(out)


def _coloured(text: str) -> str:
    """Every line in colour codes, as rich/loguru/colorlog handlers print them (a dim prefix, a reset at the end)."""
    return re.sub(r"(?m)^(.*)$", lambda m: f"\x1b[2m\x1b[32m{m[1]}\x1b[0m" if m[1] else "", text)


def generate_busy(path: Path, size_mb: int, coloured: bool = False) -> None:
    target = size_mb << 20
    blocks = [(_coloured if coloured else str)(_busy_block(1000 + 20 * j)).encode() for j in range(50)]
    with open(path, "wb") as f:
        f.write(HEAD.encode())
        written = len(HEAD)
        j = 0
        while written < target - (64 << 10):
            f.write(blocks[j % len(blocks)])
            written += len(blocks[j % len(blocks)])
            j += 1
        f.write(_tail(2500).encode())


def generate_kind(path: Path, kind: str, n: int) -> None:
    make_line = KINDS[kind]
    with open(path, "w") as f:
        f.write(HEAD)
        for i in range(0, n, 1000):
            f.write("".join(make_line(j) for j in range(i, min(n, i + 1000))))


def _run(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, int, str]:
    """Wall seconds, peak RSS (MB) of that one process, stdout."""
    t = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    out = p.stdout.read() if p.stdout else b""
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t
    return wall, ru.ru_maxrss // 1024, out.decode(errors="replace")


def _best(cmd: list[str], n: int = 3, env: dict[str, str] | None = None) -> tuple[float, int, str]:
    runs = [_run(cmd, env) for _ in range(n)]
    best = min(runs, key=lambda r: r[0])
    return best[0], max(r[1] for r in runs), best[2]


def grep_regex() -> str:
    return "|".join(re.sub(r"([.\[\]()*+?{}|^$\\])", r"\\\1", m.decode()) for m in MARKERS)


OOMFIX = [sys.executable, "-m", "oomfix", "diagnose", "--format", "json"]


def measure(log: Path, label: str, reps: int, engines: tuple[str, ...] = ("hyperscan", "python")) -> dict[str, object]:
    """grep, wc and oomfix (each engine) on one log; best wall time of `reps`, peak RSS of any run."""
    subprocess.run(["cat", str(log)], stdout=subprocess.DEVNULL, check=True)  # warm the page cache
    row: dict[str, object] = {"log": label, "mb": log.stat().st_size / (1 << 20)}
    row["wc"] = _best(["wc", "-l", str(log)], reps)[0]
    row["grep"] = _best(["grep", "-c", "-E", grep_regex(), str(log)], reps)[0]
    outs = []
    for eng in engines:
        env = dict(os.environ, OOMFIX_ENGINE="python") if eng == "python" else None
        wall, rss, out = _best(OOMFIX + [str(log)], reps, env)
        cls = re.search(r'"class": "(\w+)"', out)
        row[eng], row[eng + "_rss"], row[eng + "_class"] = wall, rss, cls.group(1) if cls else "ERROR"
        outs.append(out)
    row["same"] = len(set(outs)) == 1
    return row


def print_header() -> None:
    print(f"\n{'log':34s} {'MB':>6s} {'wc':>6s} {'grep':>6s} {'oomfix(hs)':>10s} {'RSS':>6s} {'hs/grep':>7s} "
          f"{'oomfix(py)':>10s} {'RSS':>6s} {'py/grep':>7s}  class       engines agree", flush=True)


def print_row(r: dict[str, object]) -> None:
    def cell(eng: str) -> str:
        if eng not in r:
            return f"{'-':>10s} {'-':>6s} {'-':>7s}"
        return f"{r[eng]:9.2f}s {r[eng + '_rss']:4d}MB {r[eng] / r['grep']:7.2f}"  # type: ignore[operator]
    cls = r.get("hyperscan_class", r.get("python_class"))
    print(f"{r['log']:34s} {r['mb']:6.0f} {r['wc']:5.2f}s {r['grep']:5.2f}s {cell('hyperscan')} {cell('python')}  "
          f"{cls:11s} {r['same']}", flush=True)


def bench_logs(sizes: list[int], tmp: Path, reps: int | None, engines: tuple[str, ...]) -> list[dict[str, object]]:
    rows = []
    for size in sizes:
        for variant in ("end", "middle"):
            log = tmp / f"bench_{size}mb_{variant}.log"
            generate(log, size, variant)
            rows.append(measure(log, f"standard, failure at {variant}", reps or (3 if size <= 200 else 2), engines))
            print_row(rows[-1])
            log.unlink()
    return rows


def bench_busy(size: int, tmp: Path, reps: int | None, engines: tuple[str, ...]) -> dict[str, object]:
    log = tmp / f"busy_{size}mb.log"
    generate_busy(log, size)
    row = measure(log, "busy (OOM at end)", reps or 2, engines)
    print_row(row)
    log.unlink()
    # the unfavourable shape of the same: colour codes on every line, so every line with a marker word is checked
    # in its cleaned form too (a fifth of the size)
    log = tmp / f"busy_coloured_{size // 5}mb.log"
    generate_busy(log, max(1, size // 5), coloured=True)
    print_row(measure(log, "busy, every line coloured", reps or 2, engines))
    log.unlink()
    return row


def bench_kinds(n: int, tmp: Path, reps: int | None, engines: tuple[str, ...]) -> list[dict[str, object]]:
    rows = []
    for kind in KINDS:
        log = tmp / "kind.log"
        generate_kind(log, kind, n)
        rows.append(measure(log, f"{n} x {kind}", reps or 3, engines))
        print_row(rows[-1])
        log.unlink()
    return rows


def bench_startup() -> tuple[float, float, float]:
    base = statistics.median(_run([sys.executable, "-c", "pass"])[0] for _ in range(15))
    ver = statistics.median(_run([sys.executable, "-m", "oomfix", "--version"])[0] for _ in range(15))
    small = ROOT / "fixtures" / "constructed" / "lf_sighup.log"
    diag = statistics.median(_run([sys.executable, "-m", "oomfix", "diagnose", str(small)])[0] for _ in range(9))
    return base, ver, diag


def make_tree(root: Path, configs: int = 500, launchers: int = 50, logs: int = 200) -> None:
    block = _block(1000)
    tail = _tail(2500)
    for g in range(launchers):
        d = root / f"team{g:02d}"
        (d / "configs").mkdir(parents=True)
        (d / "logs").mkdir()
        per = configs // launchers
        lines = ["#!/bin/bash"]
        for i in range(per):
            name = f"configs/run_{i:02d}.yaml"
            (d / name).write_text(make.lf_header.__doc__ or "" + f"""### model
model_name_or_path: Qwen/Qwen3-{g % 5 + 1}B
stage: sft
finetuning_type: lora
deepspeed: configs/ds_z2.json

### train
per_device_train_batch_size: {1 + (i % 2)}
gradient_accumulation_steps: {16 // (1 + (i % 2))}
output_dir: saves/run_{i:02d}
""")
            lines.append(f"CUDA_VISIBLE_DEVICES={i % 8} MASTER_PORT={29500 + i} setsid nohup llamafactory-cli train "
                         f"{name} > logs/run_{i:02d}.log 2>&1 &")
        lines.append("wait")
        (d / "launch.sh").write_text("\n".join(lines) + "\n")
        (d / "configs" / "ds_z2.json").write_text('{"train_micro_batch_size_per_gpu": "auto", '
                                                 '"zero_optimization": {"stage": 2}}\n')
    per_log = 1 << 20
    body = (HEAD + block * (per_log // len(block) + 1))[: per_log - len(tail)] + tail
    made = 0
    for g in range(launchers):
        for i in range(configs // launchers):
            if made >= logs:
                break
            (root / f"team{g:02d}" / "logs" / f"run_{i:02d}.log").write_text(
                body.replace("configs/qwen3_14b_a.yaml", f"configs/run_{i:02d}.yaml"))
            made += 1


def bench_check(tmp: Path) -> tuple[float, int, str]:
    tree = tmp / "tree"
    make_tree(tree)
    res = _best([sys.executable, "-m", "oomfix", "check", "--format", "json", str(tree)], 3)
    shutil.rmtree(tree)
    return res


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="100,1000", help="standard log sizes in MB, comma-separated ('' for none)")
    ap.add_argument("--busy", type=int, default=500, help="size of the busy log in MB (0: skip)")
    ap.add_argument("--kinds", type=int, default=100000, help="lines of each ordinary kind (0: skip)")
    ap.add_argument("--only", default="startup,standard,busy,kinds,check",
                    help="comma-separated parts to run: startup, standard, busy, kinds, check")
    ap.add_argument("--engines", default="hyperscan,python", help="oomfix engines to time")
    ap.add_argument("--reps", type=int, default=None, help="runs per measurement (default: 2-3 by size)")
    ap.add_argument("--skip-check", action="store_true")
    ap.add_argument("--keep", default=None, help="generate into this directory and keep the files")
    a = ap.parse_args()
    parts = set(a.only.split(","))
    engines = tuple(a.engines.split(","))
    tmp = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="oomfix-bench-"))
    tmp.mkdir(parents=True, exist_ok=True)
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / (1 << 30)
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?") \
        if os.path.exists("/proc/cpuinfo") else "?"
    print(f"machine: {platform.machine()} {cpu}, {os.cpu_count()} cores, {mem:.0f} GiB, Python "
          f"{platform.python_version()}, {platform.platform()}")
    try:
        import hyperscan  # noqa: F401
        print("hyperscan: installed")
    except ImportError:
        print("hyperscan: NOT installed (the 'hyperscan' column is the pure-Python engine too)")
    print(f"markers: {len(MARKERS)}")
    try:
        if "startup" in parts:
            base, ver, diag = bench_startup()
            print(f"\nstart-up: python -c pass {base * 1000:.0f} ms; oomfix --version {ver * 1000:.0f} ms "
                  f"(x{ver / base:.2f}); oomfix diagnose <small log> {diag * 1000:.0f} ms")
        print_header()
        if "standard" in parts and a.sizes:
            bench_logs([int(s) for s in a.sizes.split(",")], tmp, a.reps, engines)
        if "busy" in parts and a.busy:
            bench_busy(a.busy, tmp, a.reps, engines)
        if "kinds" in parts and a.kinds:
            bench_kinds(a.kinds, tmp, a.reps, engines)
        if "check" in parts and not a.skip_check:
            wall, rss, out = bench_check(tmp)
            n = out.count('"id":')
            print(f"\ncheck on 500 configs, 50 launchers, 200 logs of 1 MB: {wall:.2f}s, peak RSS {rss} MB, "
                  f"{n} findings")
    finally:
        if not a.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
