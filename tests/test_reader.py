"""The reader: sources, dirt, and bounds."""
import gzip
import io

import random

import pytest

from oomfix import reader
from oomfix.errors import InputError
from oomfix.reader import HEAD_BYTES, Candidate, Prefilter, open_log, scan


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


def test_ordinary_lines_with_marker_words_are_not_candidates_but_failures_are():
    # the words "errors", "memory", "checkpoint" alone do not make a line worth parsing; the patterns decide
    ordinary = (b"Token indices sequence length is longer than the specified maximum sequence length for this model "
                b"(2345 > 2048). Running this sequence through the model will result in indexing errors\n"
                b"[2026-11-27 10:00:00,000] [INFO] [utils.py:782:see_memory_usage] MA 12.50 GB         Max_MA 14.10 GB"
                b"         CA 15.20 GB         Max_CA 16 GB \n")
    failure = b"[rank3]: torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB.\n"
    for pf in (Prefilter(), reader.default_prefilter()):
        cands = _cands(ordinary * 50 + failure, prefilter=pf)
        assert [c.line_no for c in cands] == [101], pf.name
        assert "cuda_oom" in [p.name for p in cands[0].pats]


def test_every_event_of_every_fixture_comes_from_a_pattern_the_prefilter_allowed():
    import glob

    from oomfix.events import clean, parse_records, unwrap

    for path in sorted(glob.glob("fixtures/**/*.log", recursive=True)):
        stream, name = open_log(path)
        for c in scan(stream, name, Prefilter()):
            if unwrap(c, clean(c.raw)) != clean(c.raw):
                continue  # the parser joins it with its neighbours: any pattern may match the joined record
            for ev in parse_records(c, name):
                assert c.pats is None or ev.pattern in [p.name for p in c.pats], (path, c.line_no, ev.pattern)
        stream.close()


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


def test_follow_lines_that_no_pattern_can_match_are_not_handed_on(engine):
    # (constructed) a ChildFailedError reads the 600 lines after it for its summary table: the table rows are handed
    # on with the patterns they can match, the ordinary lines after the table are not (a job restarted 400 times
    # cost 6 s, each of those lines parsed with every pattern)
    table = ("torch.distributed.elastic.multiprocessing.errors.ChildFailedError: \n" + "=" * 60 + "\ntrain.py FAILED\n"
             "Root Cause (first observed failure):\n[0]:\n  time      : 2026-11-27_10:00:00\n  host      : node0\n"
             "  rank      : 0 (local_rank: 0)\n  exitcode  : -7 (pid: 100)  (SIGBUS)\n" + "=" * 60 + "\n")
    after = "".join(f"{{'loss': 1.{i % 97:02d}, 'grad_norm': 0.53, 'learning_rate': 9.1e-06, 'epoch': 0.{i % 100:02d}}}\n"
                    for i in range(700))
    cands = list(scan(io.BytesIO((table + after).encode()), "t.log", reader.default_prefilter()))
    rows = [c for c in cands if c.pats and any(p.name == "table_field" for p in c.pats)]
    assert len(rows) == 4
    assert all(c.pats for c in cands)
    assert len(cands) <= 10


def test_memory_stays_bounded_when_a_failure_line_repeats_and_the_diagnosis_does_not_change(tmp_path):
    # a device assert printed by every CUDA thread, then the rank dies: the state keeps the start, the end and one
    # line every CLUSTER_GAP lines of the run, and the diagnosis is the one of the whole log
    from oomfix.classify import CLUSTER_GAP, analyze_file, diagnose

    n = 3000
    lines = [f"[rank1]: Indexing.cu:1292: indexSelectLargeIndex: block: [{i},0,0], thread: [{i % 128},0,0] "
             f"Assertion `srcIndex < srcSelectDimSize` failed.\n" for i in range(n)]
    death = ("E1127 10:00:01.000000 1 torch/distributed/elastic/multiprocessing/api.py:1002] failed (exitcode: 1) "
             "local_rank: 1 (pid: 14) of binary: python\n")
    p = tmp_path / "asserts.log"
    p.write_text("".join(lines) + death)
    st = analyze_file(str(p)).state
    assert len(st.events) < 2 * n // CLUSTER_GAP + 10
    d = diagnose([str(p)])
    assert d.cls == "cuda_error" and d.root_cause.line == 1 and d.root_cause.rank == 1


def test_state_lines_are_read_only_around_a_failure_and_give_the_same_phase(tmp_path):
    from oomfix.classify import analyze_file, diagnose

    saves = "".join(f"[INFO|trainer.py:3705] 2026-11-27 10:00:00,000 >> Saving model checkpoint to out/checkpoint-{i}\n"
                    f"{{'loss': 1.{i % 10}, 'grad_norm': 0.8, 'learning_rate': 1e-05, 'epoch': 0.1}}\n"
                    for i in range(5000))
    p = tmp_path / "saves.log"
    p.write_text(saves + "[rank0]: torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB.\n")
    st = analyze_file(str(p)).state
    assert sum(e.role == "phase" for e in st.events) <= 2  # not 5000
    d = diagnose([str(p)])
    assert d.cls == "cuda_oom" and d.root_cause.phase == "checkpoint save"


def test_both_engines_give_the_same_candidates_and_patterns_on_dirty_and_ordinary_lines(tmp_path):
    hs = reader.default_prefilter()
    if hs.name != "hyperscan":
        pytest.skip("hyperscan not installed")
    esc = "\x1b"
    lines = [
        f"{esc}[31mERROR{esc}[0m CUDA error: an illegal memory access was encountered",
        "ERROR: Unexpected segment          ation fault encountered in worker.",
        "[2026-11-27 10:00:00,000] [INFO] [utils.py:782:see_memory_usage] MA 12.50 GB         Max_MA 14.10 GB",
        "Token indices sequence length is longer than the specified maximum sequence length for this model "
        "(2345 > 2048). Running this sequence through the model will result in indexing errors",
        "[2026-11-27 10:00:00,000] [INFO] [loss_scaler.py:183:update_scale] [deepspeed] OVERFLOW! Rank 0 Skipping step."
        " Attempted loss scale: 2, reducing to 1",
        "[INFO|trainer.py:3705] 2026-11-27 10:00:00,000 >> Saving model checkpoint to out/checkpoint-500",
        "{'loss': nan, 'grad_norm': nan, 'learning_rate': 1e-05, 'epoch': 0.5}",
        "[rank3]: torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB.",
    ]
    body = ("\n".join(lines) + "\n").encode()
    filler = b"".join(f"\r {i % 100:3d}%|#    | {i}/99999 [01:00<10:00,  1.00it/s]".encode() for i in range(3000)) + b"\n"
    data = body + filler * ((reader.HEAD_BYTES // len(filler)) + 1) + body  # the same lines in the head and past it

    def seen(pf):
        return [(c.line_no, None if c.pats is None else [p.name for p in c.pats]) for c in _cands(data, prefilter=pf)]

    assert seen(Prefilter()) == seen(hs)
    assert len(seen(hs)) >= 8


def test_hyperscan_database_cache_is_best_effort(tmp_path, monkeypatch):
    pytest.importorskip("hyperscan")
    from oomfix import fastscan

    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    monkeypatch.setenv("XDG_CACHE_HOME", str(ro / "cache"))
    pf = fastscan.HyperscanPrefilter()  # cannot write the cache: compiles, works
    assert [c.line_no for c in _cands(b"x\n[rank1]: torch.OutOfMemoryError: CUDA out of memory.\n", prefilter=pf)] == [2]
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    fastscan.HyperscanPrefilter()
    for f in (tmp_path / "cache" / "oomfix").iterdir():
        f.write_bytes(b"garbage")  # a corrupt cache entry is compiled again
    pf = fastscan.HyperscanPrefilter()
    assert len(_cands(b"Received 1 death signal, shutting down workers\n", prefilter=pf)) == 1


FAILURE_LINES = {
    "port_in_use": "torch.distributed.DistNetworkError: The server socket has failed to listen on any local network "
                   "address. port: 29500, useIpv6: 0, code: -98, name: EADDRINUSE, message: address already in use\n",
    "nccl_timeout": "[rank3]:[E429 13:55:49.384372190 ProcessGroupNCCL.cpp:1743] [PG ID 0 PG GUID 0(default_pg) Rank 3] "
                    "ProcessGroupNCCL's watchdog got stuck for 480 seconds without making progress\n",
    "cuda_error": "/pytorch/aten/src/ATen/native/cuda/IndexKernel.cu:92: operator(): block: [7,0,0], thread: [1,0,0] "
                  "Assertion `index >= -sizes[i]` failed.\n",
    "nan_loss": "epoch 3 step 100 loss = nan\n",
    "nccl_error": "node-0:3468:3905 [4] transport/net_ib.cc:1615 NCCL WARN NET/IB : Got completion from peer "
                  "10.0.0.2<54862> with status=12 opcode=0\n",
}


@pytest.mark.parametrize("cls", sorted(FAILURE_LINES))
def test_a_failure_past_the_head_is_found_by_both_engines(tmp_path, cls):
    """Past the first HEAD_BYTES only anchors used to count; a failure pattern counts through all its markers."""
    from oomfix.classify import diagnose

    filler = "{'loss': 1.2345, 'grad_norm': 0.5, 'learning_rate': 1e-05, 'epoch': 0.5}\n"
    p = tmp_path / "big.log"
    p.write_text(filler * (HEAD_BYTES // len(filler) + 1000) + FAILURE_LINES[cls])
    assert diagnose([str(p)]).cls == cls
    assert diagnose([str(p)], prefilter=Prefilter()).cls == cls


def _engines():
    hs = reader.default_prefilter()
    return [Prefilter()] + ([hs] if hs.name == "hyperscan" else [])


def _seen(data: bytes, pf, chunk: int) -> list:
    return [(c.line_no, c.raw, None if c.pats is None else [p.name for p in c.pats])
            for c in _cands(data, prefilter=pf, chunk_size=chunk)]


HEARTBEAT = (b"[rank3]:[E1127 10:00:00.000000 8 ProcessGroupNCCL.cpp:1390] [PG ID 0 PG GUID 0(default_pg) Rank 3] "
             b"Heartbeat monitor timed out! Process will be terminated after dumping debug info.\n")
SIGABRT = (b"E1127 10:00:30.000000 1 torch/distributed/elastic/multiprocessing/api.py:869] failed (exitcode: -6) "
           b"local_rank: 3 (pid: 14) of binary: /usr/bin/python\n")


@pytest.mark.parametrize("chunk", [64 << 10, 1 << 20, reader.CHUNK])
def test_a_cause_without_an_anchor_above_a_death_mid_log_is_found_whatever_the_buffer_size(chunk):
    # the pure-Python engine searches a heartbeat's words only in the window above the line that ends the failure
    # (and at the end of the log); the death may sit in the read-ahead of a buffer, past the buffer's end
    noise = b"".join(f"{{'loss': 1.{i % 9}, 'grad_norm': 0.5, 'learning_rate': 1e-05, 'epoch': 0.5}}\n".encode()
                     for i in range(100))
    filler = noise * ((HEAD_BYTES + (1 << 20)) // len(noise))
    gap = noise * ((200 << 10) // len(noise))  # between the cause and the death
    data = filler + HEARTBEAT + gap + SIGABRT + filler  # the job restarted: the log goes on for megabytes
    got = [_seen(data, pf, chunk) for pf in _engines()]
    assert all(g == got[0] for g in got)
    assert [c[2][0] for c in got[0]] == ["nccl_heartbeat", "worker_failed"]


def test_the_pure_python_engine_finds_every_literal_in_lines_that_repeat():
    # a heartbeat with no death after it and the log going on: the pure-Python engine searches a log's templates
    # (its lines with their digits masked), not the log, for every literal, as Hyperscan searches the log
    noise = b"{'loss': 1.2, 'grad_norm': 0.5, 'learning_rate': 1e-05, 'epoch': 0.5}\n" * 1000
    data = noise * ((HEAD_BYTES + (1 << 20)) // len(noise)) + HEARTBEAT + noise * ((2 << 20) // len(noise))
    got = [_seen(data, pf, reader.CHUNK) for pf in _engines()]
    assert all(g == got[0] for g in got)
    assert [c[2][0] for c in got[0]] == ["nccl_heartbeat"]


def test_the_pure_python_engine_reads_no_window_where_nothing_ended_in_lines_that_differ_by_words():
    # lines that differ by more than their digits (hashes, generated text) give as many templates as lines: there
    # the pure-Python engine searches the anchors alone, and the other literals in windows (README: Performance)
    rng = random.Random(5)
    noise = b"".join(f"sample {rng.getrandbits(64):x}: {' '.join(rng.choice(WORDS) for _ in range(8))}\n".encode()
                     for _ in range(30000))
    data = noise * ((HEAD_BYTES + (1 << 20)) // len(noise) + 1) + HEARTBEAT + noise[:2 << 20]
    assert _seen(data, Prefilter(), reader.CHUNK) == []
    assert len(_seen(data + SIGABRT, Prefilter(), reader.CHUNK)) == 1  # a death more than a window below it
    near = data[:len(data) - (1 << 21)] + noise[:100 << 10] + SIGABRT  # a death within a window below it
    assert [c[2][0] for c in _seen(near, Prefilter(), reader.CHUNK)] == ["nccl_heartbeat", "worker_failed"]


WORDS = ["the", "model", "answer", "is", "blue", "seven", "quick", "because", "tokens", "reward", "sum", "proof"]


@pytest.mark.parametrize("chunk", [64 << 10, 1 << 20])
def test_state_lines_handed_on_across_buffers_are_the_same_for_both_engines(chunk):
    lines = ["{'loss': 1.2, 'grad_norm': 0.5, 'learning_rate': 1e-05, 'epoch': 0.5}\n" * 1000] * (HEAD_BYTES // 70000 + 1)
    for i in range(6000):
        lines.append(f"{{'loss': 1.{i % 9}, 'grad_norm': 0.5, 'learning_rate': 1e-05, 'epoch': 0.5}}\n")
        if i % 500 == 7:
            lines.append(f"[INFO|trainer.py:3705] 2026-11-27 10:00:00,000 >> Saving model checkpoint to out/ck-{i}\n")
        if i % 700 == 3:
            lines.append("***** Running Evaluation *****\n")
            lines.append(f"{{'eval_loss': 0.{i % 9}, 'eval_runtime': 1.0, 'epoch': 0.5}}\n")
        if i == 4000:
            lines.append("[rank0]: NCCL WARN Cuda failure 'out of memory'\n")
    data = "".join(lines).encode() + b"[rank0]: torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2 GiB.\n"
    got = [_seen(data, pf, chunk) for pf in _engines()]
    assert all(g == got[0] for g in got)
    names = [n for _l, _r, ps in got[0] for n in (ps or [])]
    # around each failure: the last state lines before it, the first after it; not every one of the file's 24
    assert 0 < sum(n.startswith("phase_") for n in names) <= 2 * (reader.STATE_KEEP + 1)


@pytest.mark.parametrize("filler", [
    # a glog W line of ProcessGroupNCCL.cpp (torch 2.4+ barrier warning, every rank): glog_nccl_failure wants E/F
    b"[rank1]:[W1105 13:37:10.134661876 ProcessGroupNCCL.cpp:4715] [PG ID 0 PG GUID 0 Rank 1]  using GPU 1 to perform "
    b"barrier as devices used by this process are currently unknown.\n",
    # an INFO line whose words say "error" (torch elastic < 2.4): error_level refuses lower severities
    b"INFO:torch.distributed.elastic.multiprocessing:Setting worker0 reply file to: /tmp/torchelastic_x/error.json\n",
    b"[WARNING|2026-11-27 10:00:00] llamafactory.data.loader:52 >> Loading failed for one shard, retrying.\n",
])
def test_a_line_of_a_lower_severity_is_no_candidate_in_either_engine(filler):
    """Structure before words (issue 16): repeated thousands of times, such lines cost a parse each."""
    data = filler * 3 + b"x\n"
    for pf in _engines():
        for chunk in (1 << 20, 64):
            assert _seen(data, pf, chunk) == []


def test_a_lower_severity_word_does_not_hide_another_rank_s_error():
    data = b"[rank0]: INFO starting [rank1]: ERROR failure in the loader\n"  # (a level field: an error by structure)
    for pf in _engines():
        assert [c[0] for c in _seen(data, pf, 1 << 20)] == [1]
