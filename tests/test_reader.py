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


def _big_log(tmp_path, tail: bytes) -> str:
    filler = b"".join(f"\r {i % 100:3d}%|#    | {i}/99999 [01:00<10:00,  1.00it/s]".encode() for i in range(2000)) + \
        b"\n[rank1]: /x/checkpoint.py:86: UserWarning: None of the inputs have requires_grad=True\n"
    p = tmp_path / "big.log"
    with open(p, "wb") as f:
        f.write(b"Process rank: 0, world size: 4, device: cuda:0, distributed training: True\n")
        while f.tell() < reader.HEAD_BYTES + (1 << 20):
            f.write(filler)
        f.write(tail)
    return str(p)


def test_past_the_head_anchors_and_follow_lines_find_the_failure_with_both_engines(tmp_path):
    from oomfix.classify import diagnose
    from oomfix.reader import default_prefilter

    tail = (b"[INFO|trainer.py:2409] 2026-11-27 >> ***** Running training *****\n"
            b"  Instantaneous batch size per device = 2\n  Gradient Accumulation steps = 8\n"
            b"  Total train batch size (w. parallel, distributed & accumulation) = 64\n"
            b" 10%|#    | 5/50 [00:10<01:30,  2.00s/it]"
            b"[rank3]: torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB.\n"
            b"W1127 10:00:00.000000 1 torch/distributed/elastic/multiprocessing/api.py:1028] Sending process 11 "
            b"closing signal SIGTERM\n"
            b"E1127 10:00:01.000000 1 torch/distributed/elastic/multiprocessing/api.py:1002] failed (exitcode: 1) "
            b"local_rank: 3 (pid: 14) of binary: python\n")
    path = _big_log(tmp_path, tail)
    py = diagnose([path], Prefilter())
    fast = diagnose([path], default_prefilter())
    assert py.to_json() == fast.to_json()
    assert py.cls == "cuda_oom" and py.root_cause.rank == 3 and py.root_cause.phase == "training step 5/50"
    assert (py.run.per_device_train_batch_size, py.run.gradient_accumulation_steps, py.run.world_size) == (2, 8, 4)
    assert py.root_cause.line > 100  # past the 4 MB head


def test_a_64_worker_summary_table_past_the_head_is_read_whole(tmp_path):
    from oomfix.classify import diagnose

    entries = "".join(f"[{i}]:\n  time      : 2026-11-27_10:00:0{i % 2}\n  host      : node{i // 8}\n"
                      f"  rank      : {i} (local_rank: {i % 8})\n  exitcode  : -15 (pid: {100 + i})  (SIGTERM)\n"
                      f"  error_file: <N/A>\n  traceback : Signal 15 (SIGTERM) received by PID {100 + i}\n"
                      for i in range(1, 64))
    table = ("torch.distributed.elastic.multiprocessing.errors.ChildFailedError: \n" + "=" * 60 + "\ntrain.py FAILED\n"
             "Failures:\n" + entries + "Root Cause (first observed failure):\n[0]:\n  time      : 2026-11-27_10:00:00\n"
             "  host      : node0\n  rank      : 0 (local_rank: 0)\n  exitcode  : -7 (pid: 100)  (SIGBUS)\n")
    d = diagnose([_big_log(tmp_path, table.encode())], Prefilter())
    assert d.cls == "shm_bus_error" and d.root_cause.rank == 0 and len(d.cascade) == 63
