#!/usr/bin/env python3
"""Mixture benchmark: what a diagnosis costs on logs made of random mixtures of real line kinds (not a unit test).

usage: python tests/benchmarks/mixtures.py [--mb 20] [--mixtures 30] [--seed 1] [--engines hyperscan,python]
                                           [--reps 1] [--all] [--big] [--keep DIR] [--only 3,17] [--set base]

The cost of a diagnosis must not depend on which ordinary line kinds meet in a log (issue 16). Each mixture takes 1
to 4 kinds of line_kinds.KINDS (seeded: mixture 0 is the pair issue 16 reported, the next ones cover every kind once,
the rest are random draws; --set more draws from line_kinds_more.KINDS, 40 kinds collected by another session, all
from both), with random weights, and draws every line from one of them at random until
the log has --mb MB; then a CUDA OOM and torchrun's cascade end the log (the class must stay cuda_oom). Per mixture
and engine it reports (oomfix diagnose time - start-up) / (grep -c -E time over the markers oomfix looks for), both
measured on the same file in the same run (best of --reps), the peak RSS, and the class; then the worst five. The
start-up is `oomfix diagnose` on the failure's tail alone (imports, pattern tables, Hyperscan database).
--big: 200 MB per mixture. The machine may be shared: compare ratios, not seconds; the load average is printed.
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench  # noqa: E402
import line_kinds  # noqa: E402
import line_kinds_more  # noqa: E402

SETS = {"base": line_kinds.KINDS, "more": line_kinds_more.KINDS,
        "all": {**line_kinds.KINDS, **line_kinds_more.KINDS}}
KINDS = SETS["base"]  # (main() switches it with --set)

EXPECTED = "cuda_oom"
TAIL = bench._tail(2500)


# mixture 0: the one issue 16 found (a glog W line of ProcessGroupNCCL.cpp on every rank, NCCL INFO lines)
FIRST = ["c10d_barrier", "nccl_channel"]


def _cover(seed: int) -> list[list[str]]:
    """Groups of 1-4 kinds in which every kind appears once: the first mixtures after mixture 0."""
    rng = random.Random(seed)
    names = sorted(KINDS)
    rng.shuffle(names)
    out = []
    while names:
        n = rng.randint(1, 4)
        out.append(names[:n])
        names = names[n:]
    return out


def mixture(k: int, seed: int) -> tuple[list[str], list[float]]:
    """The kinds and weights of mixture k (the same for a seed, whatever else is run): mixture 0 is FIRST, then groups
    that cover every kind, then random draws of 1 to 4 kinds."""
    rng = random.Random(seed * 100003 + k)
    cover = _cover(seed)
    if k == 0 and all(x in KINDS for x in FIRST):
        kinds = FIRST
    elif k <= len(cover):
        kinds = cover[k - 1]
    else:
        kinds = rng.sample(sorted(KINDS), rng.randint(1, 4))
    return kinds, [rng.uniform(0.2, 1.0) for _ in kinds]


def generate(path: Path, kinds: list[str], weights: list[float], size_mb: int, seed: int) -> None:
    rng = random.Random(seed)
    target = size_mb << 20
    makers = [KINDS[k] for k in kinds]
    with open(path, "wb") as f:
        f.write(bench.HEAD.encode())
        written = 0
        i = 0
        while written < target - len(TAIL):
            picks = rng.choices(makers, weights, k=1000)
            block = "".join(m(i + j) for j, m in enumerate(picks)).encode()
            f.write(block)
            written += len(block)
            i += 1000
        f.write(TAIL.encode())


def _env(engine: str) -> dict[str, str]:
    env = dict(os.environ)
    if engine == "python":
        env["OOMFIX_ENGINE"] = "python"
    else:
        env.pop("OOMFIX_ENGINE", None)
    return env


def startup(tmp: Path, engine: str) -> float:
    small = tmp / "tail.log"
    small.write_text(bench.HEAD + TAIL)
    # the best of five, as each mixture's time is the best of --reps: a median here would flatter the ratio
    return min(bench._run(bench.OOMFIX + [str(small)], _env(engine))[0] for _ in range(5))


def cls_of(out: str) -> str:
    import json

    try:
        return json.loads(out)["class"]
    except (ValueError, KeyError, TypeError):
        return "ERROR"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=20, help="MB per mixture log (default 20)")
    ap.add_argument("--big", action="store_true", help="200 MB per mixture")
    ap.add_argument("--mixtures", type=int, default=30)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--engines", default="hyperscan,python")
    ap.add_argument("--reps", type=int, default=1, help="runs per measurement (best is kept)")
    ap.add_argument("--only", default="", help="comma-separated mixture numbers to run")
    ap.add_argument("--all", action="store_true", help="print every mixture, not only the worst five")
    ap.add_argument("--keep", default=None, help="generate into this directory and keep the files")
    ap.add_argument("--set", default="base", choices=sorted(SETS),
                    help="line kinds: base (line_kinds.py, 31), more (line_kinds_more.py, 40), all")
    a = ap.parse_args()
    global KINDS
    KINDS = SETS[a.set]
    size = 200 if a.big else a.mb
    engines = a.engines.split(",")
    tmp = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="oomfix-mix-"))
    tmp.mkdir(parents=True, exist_ok=True)
    print(f"{len(KINDS)} line kinds, {a.mixtures} mixtures of 1-4 kinds, {size} MB each, seed {a.seed}; "
          f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores", flush=True)
    only = {int(x) for x in a.only.split(",") if x}
    rows = []
    try:
        base = {e: startup(tmp, e) for e in engines}
        print("start-up: " + ", ".join(f"{e} {base[e]:.2f}s" for e in engines), flush=True)
        for k in range(a.mixtures):
            if only and k not in only:
                continue
            kinds, weights = mixture(k, a.seed)
            log = tmp / f"mix{k:02d}.log"
            generate(log, kinds, weights, size, a.seed * 7919 + k)
            bench.subprocess.run(["cat", str(log)], stdout=bench.subprocess.DEVNULL, check=True)  # page cache
            grep = bench._best(["grep", "-c", "-E", bench.grep_regex(), str(log)], max(a.reps, 3))[0]
            row = {"k": k, "kinds": "+".join(kinds), "mb": log.stat().st_size / (1 << 20), "grep": grep}
            for e in engines:
                wall, rss, out = bench._best(bench.OOMFIX + [str(log)], a.reps, _env(e))
                row[e] = (wall, max(0.0, wall - base[e]) / grep, rss, cls_of(out))
            rows.append(row)
            if a.all:
                _print(row, engines)
            if not a.keep:
                log.unlink()
    finally:
        if not a.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    for e in engines:
        worst = sorted(rows, key=lambda r: -r[e][1])[:5]
        print(f"\nworst five, engine {e} (ratio: (oomfix - start-up) / grep):")
        for r in worst:
            _print(r, [e])
        bad = [r["k"] for r in rows if r[e][3] != EXPECTED]
        print(f"{e}: worst {worst[0][e][1]:.2f}x grep, median {statistics.median(r[e][1] for r in rows):.2f}x, "
              f"peak RSS {max(r[e][2] for r in rows)} MB, class wrong on {len(bad)} of {len(rows)} {bad or ''}")
    print(f"load average at the end {os.getloadavg()[0]:.2f}")
    return 0


def _print(r: dict, engines: list[str]) -> None:
    cells = "  ".join(f"{e}: {r[e][0]:6.2f}s {r[e][1]:6.2f}x {r[e][2]:4d}MB {r[e][3]}" for e in engines)
    print(f"  #{r['k']:02d} {r['mb']:5.0f}MB grep {r['grep']:.3f}s  {cells}  {r['kinds']}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
