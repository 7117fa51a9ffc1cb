"""Ordinary line kinds cost the reader nothing per line (issue 16), checked by counting, never by timing.

tests/benchmarks/line_kinds.py and line_kinds_more.py hold 71 kinds of ordinary lines of real training logs, in their
producers' wording (constructed from those wordings: the benchmark's material). None means the run failed, so a log
made of thousands of one kind must hand on (almost) no candidate line to the parser, with either engine: a line that
no failure pattern can match is dropped by the prefilter, and repeated run-parameter lines are handed on first and last
(reader: settled lines). The wall time of a diagnosis follows from the candidates handed on; tests/benchmarks/
mixtures.py measures it against grep. And the kinds stay ordinary: a log of all of them is no failure, and with a
CUDA OOM at its end it is that OOM.
"""
from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

from oomfix import reader
from oomfix.diagnose import diagnose_logs

sys.path.insert(0, str(Path(__file__).parent / "benchmarks"))
import bench  # noqa: E402
import line_kinds  # noqa: E402
import line_kinds_more  # noqa: E402

KINDS = {**line_kinds.KINDS, **line_kinds_more.KINDS}
LINES = 3000  # copies of each kind: up to a few MB




def _candidates(data: bytes) -> list:
    return list(reader.scan(io.BytesIO(data), "kinds.log", reader.default_prefilter()))


def test_the_two_sets_do_not_overlap():
    assert not set(line_kinds.KINDS) & set(line_kinds_more.KINDS)
    assert len(KINDS) >= 70


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_the_lines_handed_on_do_not_grow_with_the_log(kind, engine):
    """1,000 and 3,000 copies of one kind: the candidates handed on stay as few (what a kind may hand on: the first and
    the last of a repeated run-parameter line or HF block, with its FOLLOW lines; once more per buffer and per new
    pattern set, never per copy)."""
    few = _candidates("".join(KINDS[kind](i) for i in range(LINES // 3)).encode())
    many = _candidates("".join(KINDS[kind](i) for i in range(LINES)).encode())
    assert len(few) <= 120, [c.raw[:100] for c in few[:5]]
    # (slack: one more buffer's end, where the held lines are handed on: a trigger, its 14 FOLLOW lines, the held
    # run parameters)
    assert len(many) <= len(few) + 24, ([c.raw[:100] for c in few[-3:]], [c.raw[:100] for c in many[-3:]])


def test_every_kind_interleaved_is_no_failure_and_the_oom_at_its_end_is_found(tmp_path, engine):
    names = sorted(KINDS)

    def body(rounds: int) -> str:
        return "".join(KINDS[names[i % len(names)]](i) for i in range(rounds * len(names)))

    few = _candidates((bench.HEAD + body(10)).encode())
    log = tmp_path / "all_kinds.log"
    log.write_text(bench.HEAD + body(40))
    assert len(_candidates(log.read_bytes())) <= len(few) + 16
    assert diagnose_logs([str(log)]).to_json()["class"] == "none"
    log.write_text(bench.HEAD + body(40) + bench._tail(500))
    assert diagnose_logs([str(log)]).to_json()["class"] == "cuda_oom"
