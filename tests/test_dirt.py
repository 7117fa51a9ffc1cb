"""Real dirt, generally: every corpus log keeps its class under the prefixes and noise that real logs carry.

Each transformation is applied to every line of every real log in ../shared/corpus/logs; the diagnosis must not
change (hard-wrapping may turn it into `unknown`, nothing else). This tests the event layer's one place for prefixes
(events.strip_prefixes), not a pattern per file.
"""
from __future__ import annotations

import json
import re

import pytest

from conftest import SHARED, shared_or_skip
from oomfix.classify import diagnose

CORPUS = SHARED / "corpus" / "logs"
ESC = "\x1b"


def _lines(text: str) -> list[str]:
    return text.split("\n")


def ray_prefix(text: str) -> str:
    return "\n".join(f"(WorkerDict pid=48213, ip=10.1.2.3) {ln}" if ln else ln for ln in _lines(text))


def ray_prefix_coloured(text: str) -> str:
    return "\n".join(f"{ESC}[36m(WorkerDict pid=48213, ip=10.1.2.3){ESC}[0m {ln}" if ln else ln
                     for ln in _lines(text))


def clock_stamp(text: str) -> str:
    return "\n".join(f"18:11:{i % 60:02d}.680 {ln}" if ln else ln for i, ln in enumerate(_lines(text)))


def crlf(text: str) -> str:
    return text.replace("\n", "\r\n")


def ansi(text: str) -> str:
    return "\n".join(f"{ESC}[31m{ln}{ESC}[0m" if ln else ln for ln in _lines(text))


def tqdm_glued(text: str) -> str:
    out = []
    for i, ln in enumerate(_lines(text)):
        if i % 5 == 4 and ln:
            ln = f"\r 45%|████▌     | 45/100 [00:10<00:12,  4.50it/s]{ln}"
        out.append(ln)
    return "\n".join(out)


def wrap120(text: str) -> str:
    out = []
    for ln in _lines(text):
        while len(ln) > 120:
            out.append(ln[:120])
            ln = ln[120:]
        out.append(ln)
    return "\n".join(out)


DIRT = [ray_prefix, ray_prefix_coloured, clock_stamp, crlf, ansi, tqdm_glued]


def _cases():
    if not (CORPUS / "labels.json").exists():
        return []
    return [c["file"] for c in json.loads((CORPUS / "labels.json").read_text())]


def _class(path) -> str:
    return diagnose([str(path)]).cls


@pytest.fixture(scope="module")
def clean_classes():
    shared_or_skip(CORPUS / "labels.json")
    return {f: _class(CORPUS / f) for f in _cases()}


@pytest.mark.parametrize("dirt", DIRT + [wrap120], ids=lambda f: f.__name__)
def test_dirt_keeps_the_class(dirt, clean_classes, tmp_path):
    changed = []
    for name, cls in clean_classes.items():
        text = (CORPUS / name).read_text(encoding="utf-8", errors="replace")
        p = tmp_path / name
        p.write_bytes(dirt(text).encode("utf-8"))
        got = _class(p)
        allowed = {cls, "unknown"} if dirt is wrap120 else {cls}
        if got not in allowed:
            changed.append(f"{name}: {cls} -> {got}")
    assert not changed, f"{dirt.__name__} changed {len(changed)}/{len(clean_classes)}: " + "; ".join(changed)


def test_dirt_stacked(clean_classes, tmp_path):
    """All prefixes at once, in the order real pipelines stack them: a stamp, a Ray tag, colour, CRLF."""
    changed = []
    for name, cls in clean_classes.items():
        text = (CORPUS / name).read_text(encoding="utf-8", errors="replace")
        p = tmp_path / name
        p.write_bytes(crlf(ansi(clock_stamp(ray_prefix_coloured(text)))).encode("utf-8"))
        got = _class(p)
        if got != cls:
            changed.append(f"{name}: {cls} -> {got}")
    assert not changed, "; ".join(changed)


def test_the_transformations_really_change_the_bytes():
    sample = "[rank0]: RuntimeError: x\n" + "".join(f"line {i}\n" for i in range(6))
    for dirt in DIRT + [wrap120]:
        if dirt is wrap120:
            assert dirt("x" * 300) != "x" * 300
        else:
            assert dirt(sample) != sample, dirt.__name__
    assert re.match(r"18:11:\d\d\.680 \[rank0\]", clock_stamp(sample))
