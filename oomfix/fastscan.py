"""The Hyperscan engine for the reader's prefilter: every literal in one pass over the buffer.

Intel's Hyperscan (the `hyperscan` wheel) matches all literals at once with SIMD; the pure-Python engine needs a
bytes.find pass per literal. Same literals, same places (see `reader.Prefilter`), so the same candidates.
"""
from __future__ import annotations

import re

import hyperscan

from oomfix.reader import Prefilter


def _database(literals: tuple[bytes, ...]) -> "hyperscan.Database":
    db = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
    db.compile(expressions=[re.escape(m) for m in literals], ids=list(range(len(literals))),
               elements=len(literals), flags=[0] * len(literals))
    return db


class HyperscanPrefilter(Prefilter):
    name = "hyperscan"

    def __init__(self, markers: tuple[bytes, ...], extra: tuple[bytes, ...] = ()) -> None:
        super().__init__(markers, extra)
        self._dbs = {self.markers: _database(self.markers), self.anchors: _database(self.anchors)}
        self._scratch = {k: hyperscan.Scratch(v) for k, v in self._dbs.items()} if hasattr(hyperscan, "Scratch") \
            else {}

    def _find(self, buf: bytes, start: int, end: int, literals: tuple[bytes, ...]) -> list[int]:
        hits: list[int] = []
        lengths = [len(m) for m in literals]
        append = hits.append

        def on_match(idx: int, _from: int, to: int, _flags: int, _ctx: object) -> None:
            append(start + to - lengths[idx])

        view = memoryview(buf)[start:end]
        self._dbs[literals].scan(view, match_event_handler=on_match)
        return hits
