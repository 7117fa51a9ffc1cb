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


def bench_logs(sizes: list[int], tmp: Path) -> list[dict[str, object]]:
    oomfix = [sys.executable, "-m", "oomfix", "diagnose", "--format", "json"]
    rows = []
    for size in sizes:
        for variant in ("end", "middle"):
            log = tmp / f"bench_{size}mb_{variant}.log"
            generate(log, size, variant)
            subprocess.run(["cat", str(log)], stdout=subprocess.DEVNULL, check=True)  # warm the page cache
            reps = 3 if size <= 200 else 2
            wc = _best(["wc", "-l", str(log)], reps)
            grep = _best(["grep", "-c", "-E", grep_regex(), str(log)], reps)
            hs = _best(oomfix + [str(log)], reps)
            py = _best(oomfix + [str(log)], 1 if size > 200 else reps, dict(os.environ, OOMFIX_ENGINE="python"))
            cls = re.search(r'"class": "(\w+)"', hs[2])
            cls_py = re.search(r'"class": "(\w+)"', py[2])
            rows.append({"size_mb": size, "variant": variant, "wc": wc[0], "grep": grep[0], "hyperscan": hs[0],
                         "hyperscan_rss": hs[1], "python": py[0], "python_rss": py[1],
                         "class": cls.group(1) if cls else None, "same": hs[2] == py[2],
                         "class_py": cls_py.group(1) if cls_py else None})
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
    ap.add_argument("--sizes", default="100,1000", help="log sizes in MB, comma-separated")
    ap.add_argument("--skip-check", action="store_true")
    ap.add_argument("--keep", default=None, help="generate into this directory and keep the files")
    a = ap.parse_args()
    tmp = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="oomfix-bench-"))
    tmp.mkdir(parents=True, exist_ok=True)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"{platform.platform()}")
    try:
        import hyperscan  # noqa: F401
        print("hyperscan: installed")
    except ImportError:
        print("hyperscan: NOT installed (the 'hyperscan' column is the pure-Python engine too)")
    print(f"markers: {len(MARKERS)}")
    try:
        base, ver, diag = bench_startup()
        print(f"\nstart-up: python -c pass {base * 1000:.0f} ms; oomfix --version {ver * 1000:.0f} ms "
              f"(x{ver / base:.2f}); oomfix diagnose <small log> {diag * 1000:.0f} ms")
        print("\n size variant      wc     grep   oomfix(hs)  RSS   oomfix(py)  RSS   hs/grep  py/grep  hs/wc  class"
              "       engines agree")
        for r in bench_logs([int(s) for s in a.sizes.split(",")], tmp):
            print(f"{r['size_mb']:5d} {r['variant']:7s} {r['wc']:6.2f}s {r['grep']:6.2f}s {r['hyperscan']:8.2f}s "
                  f"{r['hyperscan_rss']:4d}MB {r['python']:8.2f}s {r['python_rss']:4d}MB "
                  f"{r['hyperscan'] / r['grep']:7.2f} {r['python'] / r['grep']:7.2f} {r['hyperscan'] / r['wc']:6.2f}  "
                  f"{r['class']:11s} {r['same']}")
        if not a.skip_check:
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
