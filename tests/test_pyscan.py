"""The pure-Python engine (oomfix.pyscan): it searches a log's templates (lines with their digits masked), once each,
for every literal, so it finds what Hyperscan finds wherever a log's lines repeat (issue 16); lines that differ by
words are searched for the anchors, and the rest in windows (test_reader)."""
from __future__ import annotations

import io
import random
import sys
from pathlib import Path

import pytest

from oomfix import pyscan, reader
from oomfix.patterns import HEAD_BYTES
from oomfix.pyscan import Prefilter

sys.path.insert(0, str(Path(__file__).parent / "benchmarks"))
import line_kinds  # noqa: E402

# genuine failure lines, in their producers' wording (torch's c10d watchdog and elastic agent, the CUDA caching
# allocator, NCCL, DeepSpeed's loss scaler)
FAILURES = [
    b"[rank3]:[E1127 10:00:00.000000 8 ProcessGroupNCCL.cpp:1390] [PG ID 0 PG GUID 0(default_pg) Rank 3] Heartbeat "
    b"monitor timed out! Process will be terminated after dumping debug info.\n",
    b"E1127 10:00:30.000000 1 torch/distributed/elastic/multiprocessing/api.py:869] failed (exitcode: -6) "
    b"local_rank: 3 (pid: 14) of binary: /usr/bin/python\n",
    b"[rank1]: torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 1 has a total capacity of "
    b"79.11 GiB of which 1.20 GiB is free.\n",
    b"node-1:4242:4300 [3] NCCL WARN Call to ibv_modify_qp failed with error Connection timed out\n",
    b"[2026-11-27 10:00:01,037] [INFO] [loss_scaler.py:183:update_scale] [deepspeed] OVERFLOW! Rank 0 Skipping step. "
    b"Attempted loss scale: 1, reducing to 1\n",
]


def _hyperscan():
    hs = reader.default_prefilter()
    if hs.name != "hyperscan":
        pytest.skip("the Hyperscan engine is not installed")
    return hs


def _seen(data: bytes, pf) -> list:
    return [(c.line_no, None if c.pats is None else tuple(p.name for p in c.pats))
            for c in reader.scan(io.BytesIO(data), "x.log", pf)]


def _log(seed: int, mb: int) -> bytes:
    """Lines of three random kinds of the mixture benchmark, with genuine failure lines at random places."""
    rng = random.Random(seed)
    kinds = [line_kinds.KINDS[k] for k in rng.sample(sorted(line_kinds.KINDS), 3)]
    out, size, i = [], 0, 0
    while size < mb << 20:
        line = (rng.choice(kinds)(i) if rng.random() > 0.0005 else rng.choice(FAILURES).decode()).encode()
        out.append(line)
        size += len(line)
        i += 1
    return b"".join(out)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_engines_hand_on_the_same_lines_where_lines_repeat(seed):
    hs = _hyperscan()
    data = _log(seed, 7)
    assert _seen(data, Prefilter()) == _seen(data, hs)


def test_overflow_lines_are_read_only_when_the_scale_reaches_one():
    # DeepSpeed prints an OVERFLOW line per skipped step; a pattern that names a digit (the scale reaching 1) makes
    # the template's verdict depend on the digits: each line is tested by that pattern alone, past the head too
    steps = [f"[2026-11-27 10:00:{i % 60:02d},037] [INFO] [loss_scaler.py:183:update_scale] [deepspeed] OVERFLOW! Rank "
             f"{i % 8} Skipping step. Attempted loss scale: {2 ** (16 - i % 8)}, reducing to {2 ** (15 - i % 8)}\n"
             for i in range(HEAD_BYTES // 100)]
    data = "".join(steps).encode() * 2 + FAILURES[4] + "".join(steps[:1000]).encode()
    got = _seen(data, Prefilter())
    assert [names for _n, names in got] == [("loss_scale_floor",)]
    if reader.default_prefilter().name == "hyperscan":
        assert got == _seen(data, reader.default_prefilter())


def test_coloured_overflow_lines_are_read_only_when_the_scale_reaches_one():
    # the same in colour codes (rich, colorlog): the digit-naming pattern is tried on the cleaned line
    def coloured(line: bytes) -> bytes:
        return b"\x1b[2m\x1b[32m" + line.rstrip(b"\n") + b"\x1b[0m\n"

    steps = [coloured(f"[2026-11-27 10:00:{i % 60:02d},037] [INFO] [loss_scaler.py:183:update_scale] [deepspeed] "
                      f"OVERFLOW! Rank {i % 8} Skipping step. Attempted loss scale: {2 ** (16 - i % 8)}, reducing to "
                      f"{2 ** (15 - i % 8)}\n".encode()) for i in range(HEAD_BYTES // 100)]
    data = b"".join(steps) * 2 + coloured(FAILURES[4]) + b"".join(steps[:1000])
    got = _seen(data, Prefilter())
    assert [names for _n, names in got] == [("loss_scale_floor",)]
    if reader.default_prefilter().name == "hyperscan":
        assert got == _seen(data, reader.default_prefilter())


def test_a_bound_on_the_templates_kept_changes_no_answer(monkeypatch):
    # the templates kept are dropped all at once past the bound, then learnt again (a block's new templates stay few:
    # a bound below one block's own templates would send every block to the anchors-only search)
    data = b"".join(_log(seed, 1) for seed in range(10, 20))  # other line kinds every megabyte
    want = _seen(data, Prefilter())
    templates = set(data.translate(bytes.maketrans(b"0123456789", b"1111111111")).split(b"\n"))
    bound = 12 << 10
    assert sum(map(len, templates)) > 2 * bound  # (so the bound is reached)
    monkeypatch.setattr(pyscan, "KNOWN_BYTES", bound)
    pf = Prefilter()
    assert _seen(data, pf) == want
    assert pf._known_bytes <= bound


def test_a_failure_after_a_carriage_return_is_a_line_of_its_own():
    bar = "".join(f"\r  {p}%|{'#' * (p // 10)}{' ' * (10 - p // 10)}| {p}/100 [00:{p:02d}<00:10, 9.1it/s]"
                  for p in range(100))
    noise = (bar + "\n").encode() * (HEAD_BYTES // len(bar) + 200)
    data = noise + b"\r" + FAILURES[2] + noise[:1 << 20]
    got = list(reader.scan(io.BytesIO(data), "x.log", Prefilter()))
    assert [c.raw for c in got] == [FAILURES[2].rstrip(b"\n")]
    assert [p.name for p in got[0].pats][0] == "cuda_oom"


@pytest.mark.parametrize("shift", [-40, -1, 0, 1])
def test_a_line_across_the_head_boundary_is_read_as_a_head_line(shift):
    filler = b"{'loss': 1.25, 'grad_norm': 0.5, 'learning_rate': 1e-05, 'epoch': 0.5}\n"
    body = filler * (HEAD_BYTES // len(filler) + 1)
    cut = HEAD_BYTES + shift - 60
    data = body[:cut] + b"\n" + FAILURES[1] + body[:2 << 20]
    engines = [Prefilter()] + ([reader.default_prefilter()] if reader.default_prefilter().name == "hyperscan" else [])
    got = [_seen(data, pf) for pf in engines]
    assert all(g == got[0] for g in got)
    assert [names[0] for _n, names in got[0]] == ["worker_failed"]


MARKER = b"Received 1 death signal, shutting down workers"
CUT_LINE = bytearray(b"y " * 5000 + MARKER + b" z" * 5000)
ANCHOR_AT = 10000 + MARKER.index(b"ignal")  # (the anchor in it)


@pytest.mark.parametrize("offset", range(14, 27))
def test_a_marker_across_the_cut_of_an_endless_line_is_found(offset):
    # a line longer than a buffer is cut where the buffer ends (reader.scan): the engine reads the bytes after the
    # cut for a literal that straddles it (it begins before the cut: this buffer's; after it: the next one's)
    end = 10000 + offset
    assert bool(Prefilter().find(CUT_LINE, end, HEAD_BYTES, len(CUT_LINE), False)) == (ANCHOR_AT < end)


@pytest.mark.xfail(strict=True, reason="Hyperscan reports where a match ends: a match across the cut of a line longer "
                                       "than a buffer (8 MB) is not read ahead")
def test_hyperscan_misses_a_marker_across_the_cut_of_an_endless_line():
    hs = _hyperscan()
    assert hs.find(CUT_LINE, ANCHOR_AT + 2, HEAD_BYTES, len(CUT_LINE), False)


def test_hits_are_handed_over_block_by_block():
    # a million short error lines in one buffer: the hits held at once stay those of one block (about 1 MB)
    buf = bytearray(b"RuntimeError: boom\n" * 200000)  # 3.8 MB
    blocks = list(Prefilter().find_blocks(buf, len(buf), HEAD_BYTES, len(buf), True))
    assert len(blocks) >= 3
    assert max(len(b) for b in blocks) <= pyscan.BLOCK // 19 + 1
    assert sum(len(b) for b in blocks) == 200000
    assert [h for b in blocks for h in b] == sorted(h for b in blocks for h in b)
