"""The Flight Recorder (oomfix/flightrec.py): the relaunch environment, the restricted unpickler, the analysis.

fixtures/flight_recorder/gloo_desync/ holds GENUINE dumps recorded by torch 2.13's gloo backend (see its README);
the mismatch case below is CONSTRUCTED from them (one entry's collective renamed, in torch's own format).
"""
from __future__ import annotations

import json
import os
import pickle
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from oomfix import flightrec
from oomfix.cli import main
from oomfix.errors import InputError

ROOT = Path(__file__).resolve().parent.parent
GENUINE = ROOT / "fixtures" / "flight_recorder" / "gloo_desync"


def test_relaunch_env_uses_torchs_names_and_a_directory_beside_the_log():
    env = flightrec.relaunch_env("logs/run-attempt2.log")
    assert env["TORCH_NCCL_TRACE_BUFFER_SIZE"] == "2000" and env["TORCH_NCCL_DUMP_ON_TIMEOUT"] == "1"
    assert env["TORCH_NCCL_DEBUG_INFO_TEMP_FILE"] == os.path.abspath("logs/run-attempt2.fr/nccl_trace_rank_")


def test_genuine_gloo_dumps_say_which_rank_did_not_enter_which_collective():
    dumps = flightrec.find_dumps(None, str(GENUINE / "nccl_trace_rank_"))
    assert sorted(dumps) == [0, 1]
    d0 = flightrec.load_dump(dumps[0])
    assert d0["version"] and d0["entries"][0]["profiling_name"] == "gloo:all_reduce"
    a = flightrec.analyze(dumps)
    (m,) = a.missed
    assert (m.seq, m.op, m.entered, m.missing, dict(m.last_seq)) == (4, "gloo:all_reduce", (0,), (1,), {1: 3})
    assert a.mismatches == () and a.no_dump == ()
    text = flightrec.render_text(a)
    assert "collective #4 (gloo:all_reduce) was entered by rank 0; rank 1 did not enter it (its last was #3)" in text


def test_constructed_desync_two_ranks_enter_different_collectives(tmp_path):
    # CONSTRUCTED from the genuine dumps: rank 1's collective #2 renamed to a broadcast
    for r in (0, 1):
        d = flightrec.load_dump(str(GENUINE / f"nccl_trace_rank_{r}"))
        if r == 1:
            for e in d["entries"]:
                if e["collective_seq_id"] == 2:
                    e["profiling_name"] = "gloo:broadcast"
        (tmp_path / f"nccl_trace_rank_{r}").write_bytes(pickle.dumps(d))
    a = flightrec.analyze(flightrec.find_dumps(None, str(tmp_path)))
    (x,) = a.mismatches
    assert x.seq == 2 and dict(x.ops) == {0: "gloo:all_reduce", 1: "gloo:broadcast"}
    assert "out of step" in flightrec.render_text(a)


def test_a_rank_without_a_dump_is_named(tmp_path):
    shutil.copy(GENUINE / "nccl_trace_rank_0", tmp_path / "nccl_trace_rank_0")
    a = flightrec.analyze(flightrec.find_dumps(None, str(tmp_path / "nccl_trace_rank_")))
    assert a.ranks == (0,) and a.no_dump == (1,)
    assert "no dump from rank 1" in flightrec.render_text(a)


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_restricted_unpickler_refuses_a_pickle_that_would_run_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    evil = {"version": "2.10", "pg_config": {}, "entries": [_RunsCode()]}
    Path("nccl_trace_rank_0").write_bytes(pickle.dumps(evil))
    with pytest.raises(flightrec.RefusedPickle, match="posix.system|os.system"):
        flightrec.load_dump("nccl_trace_rank_0")
    assert not Path("pwned").exists()
    # the analysis skips it and says so; nothing runs
    a = flightrec.analyze({0: "nccl_trace_rank_0"})
    assert a.ranks == () and "not plain data" in a.unreadable[0]
    assert not Path("pwned").exists()


@pytest.mark.parametrize("data", [b"", b"\x80\x04\x95", b"not a pickle", pickle.dumps([1, 2]),
                                  pickle.dumps({"entries": "x"})])
def test_unreadable_dumps_are_one_line_errors(tmp_path, data):
    p = tmp_path / "nccl_trace_rank_0"
    p.write_bytes(data)
    with pytest.raises(InputError):
        flightrec.load_dump(str(p))


def test_diagnose_reads_the_dumps_beside_the_log(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("logs").mkdir()
    shutil.copy(GENUINE / "run.log", "logs/run-attempt2.log")
    shutil.copytree(GENUINE, "logs/run-attempt2.fr")
    r = CliRunner().invoke(main, ["diagnose", "logs/run-attempt2.log"])
    assert r.exit_code == 0, r.output
    assert "rank 1 did not enter it" in r.output
    r = CliRunner().invoke(main, ["diagnose", "logs/run-attempt2.log", "--format", "json"])
    fr = json.loads(r.output)["flight_recorder"]
    assert fr["missed"][0] == {"process_group": "0 (default_pg)", "seq": 4, "collective": "gloo:all_reduce",
                               "entered": [0], "missing": [1], "last_seq": {"1": 3}}
    r = CliRunner().invoke(main, ["diagnose", "logs/run-attempt2.log", "--flight-recorder", str(GENUINE)])
    assert "rank 1 did not enter it" in r.output


@pytest.mark.slow
def test_genuine_gloo_dumps_made_now(tmp_path):
    pytest.importorskip("torch")
    exe = Path(sys.executable).with_name("torchrun")
    if not exe.exists():
        pytest.skip("torchrun is not installed beside this Python")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, TORCH_NCCL_DEBUG_INFO_TEMP_FILE=str(tmp_path / "nccl_trace_rank_"), FR_TIMEOUT="2")
    subprocess.run([str(exe), "--nproc_per_node", "2", "--master_port", str(port),
                    str(ROOT / "tests" / "e2e" / "fr_desync.py")], env=env, capture_output=True, timeout=120)
    a = flightrec.analyze(flightrec.find_dumps(None, str(tmp_path / "nccl_trace_rank_")))
    (m,) = a.missed
    assert (m.seq, m.entered, m.missing) == (4, (0,), (1,))
