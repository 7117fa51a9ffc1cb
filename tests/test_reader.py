"""The reader: sources, dirt, and bounds."""
import gzip
import io

import pytest

from oomfix import reader
from oomfix.errors import InputError
from oomfix.reader import Candidate, Prefilter, open_log, scan


def _cands(data: bytes, **kw) -> list[Candidate]:
    return list(scan(io.BufferedReader(io.BytesIO(data)), "t", **kw))


def test_only_marker_lines_are_candidates_with_editor_line_numbers():
    data = b"a\nb\nSending process 1 closing signal SIGTERM\nc\n"
    cands = _cands(data)
    assert [(c.line_no, c.raw) for c in cands] == [(3, b"Sending process 1 closing signal SIGTERM")]


def test_carriage_returns_split_logical_lines_but_not_line_numbers():
    data = b"x\n 10%| | 1/10 [00:01<00:09]\r 20%| | 2/10 [00:02<00:08]Killed\nnext\n"
    (c,) = _cands(data)
    assert c.line_no == 2 and c.raw.endswith(b"Killed") and b"1/10" not in c.raw


def test_markers_across_buffer_boundaries_are_found():
    line = b"Received 1 death signal, shutting down workers\n"
    data = b"x" * 1000 + b"\n" + line
    for size in (7, 64, 1001, 1010, 1030):
        cands = _cands(data, chunk_size=size)
        assert [c.raw for c in cands] == [line.strip()], size


def test_endless_line_is_cut_and_memory_stays_bounded(monkeypatch):
    monkeypatch.setattr(reader, "MAX_CARRY", 4096)
    data = b"y" * 50000 + b"Received 1 death signal, shutting down workers" + b"z" * 50000
    cands = _cands(data, chunk_size=1000)
    assert len(cands) == 1 and len(cands[0].raw) <= reader.MAX_LINE


def test_gzip_detected_by_magic_bytes(tmp_path):
    p = tmp_path / "train.log.1"
    p.write_bytes(gzip.compress(b"W1 x] Received 1 death signal, shutting down workers\n"))
    stream, name = open_log(str(p))
    assert [c.line_no for c in scan(stream, name)] == [1]


def test_truncated_gzip_is_an_input_error(tmp_path):
    p = tmp_path / "t.log.gz"
    data = b"".join(f"line {i} {i * 7919 % 10007}\n".encode() for i in range(20000))
    blob = gzip.compress(data)
    p.write_bytes(blob[: len(blob) // 2])
    stream, name = open_log(str(p))
    with pytest.raises(InputError, match="truncated or corrupt gzip"):
        list(scan(stream, name))


@pytest.mark.parametrize("make,msg", [
    (lambda p: None, "no such file"),
    (lambda p: p.mkdir(), "is a directory"),
])
def test_unreadable_sources(tmp_path, make, msg):
    p = tmp_path / "x.log"
    make(p)
    with pytest.raises(InputError, match=msg):
        open_log(str(p))


def test_binary_is_not_a_log(tmp_path):
    p = tmp_path / "model.bin"
    p.write_bytes(bytes(range(256)) * 100)
    stream, name = open_log(str(p))
    with pytest.raises(InputError, match="not a text log"):
        list(scan(stream, name))


def test_invalid_utf8_is_read_not_refused(tmp_path):
    p = tmp_path / "x.log"
    p.write_bytes(b"\xff\xfe caf\xe9\nReceived 1 death signal, shutting down workers\n")
    stream, name = open_log(str(p))
    assert len(list(scan(stream, name))) == 1


def test_pure_python_prefilter_finds_every_marker():
    from oomfix.patterns import MARKERS

    data = b"\n".join(b"pad " + m + b" pad" for m in MARKERS) + b"\n"
    assert len(_cands(data, prefilter=Prefilter())) == len(MARKERS)
