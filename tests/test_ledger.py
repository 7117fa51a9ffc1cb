"""The run ledger (oomfix/ledger.py) and `oomfix runs`."""
from __future__ import annotations

import json

from click.testing import CliRunner

from oomfix import ledger
from oomfix.cli import main
from oomfix.ledger import Attempt


def test_ledger_round_trip_and_runs_grouping(tmp_path):
    a1 = Attempt(1, "torchrun t.py c.yaml", "2026-01-01T00:00:00+00:00", "2026-01-01T00:01:00+00:00", 1,
                 "logs/r-attempt1.log", "cuda_oom", "cuda-oom-split-micro-batch", ("c.yaml",))
    a2 = Attempt(2, "torchrun t.py c.yaml", "2026-01-01T00:01:00+00:00", "2026-01-01T00:09:00+00:00", 0,
                 "logs/r-attempt2.log", "none")
    b1 = Attempt(1, "torchrun t.py c.yaml", "2026-01-02T00:00:00+00:00", "2026-01-02T00:00:09+00:00", 143,
                 "logs/s-attempt1.log", "sigterm", stopped_by="SIGTERM")
    for a in (a1, a2, b1):
        ledger.append(a, tmp_path)
    with open(ledger.ledger_path(tmp_path), "a") as f:
        f.write('{"attempt": 2, "comm')  # a record cut short by a kill
    got = ledger.read(tmp_path)
    assert got == [a1, a2, b1]
    assert list(json.loads(ledger.ledger_path(tmp_path).read_text().splitlines()[0])) == [
        "attempt", "command", "started", "ended", "exit_code", "log", "class", "rule", "files", "stopped_by"]
    assert [len(r) for r in ledger.runs(got)] == [2, 1]
    text = ledger.render_text(got)
    assert "run 1: 2 attempts, trained" in text and "run 2: 1 attempt, stopped by SIGTERM" in text
    assert "cuda_oom -> cuda-oom-split-micro-batch (c.yaml)" in text


def test_runs_command(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(main, ["runs"])
    assert r.exit_code == 0 and "no runs recorded" in r.output
    ledger.append(Attempt(1, "x", "s", "e", 0, "l", "none"), ".")
    r = CliRunner().invoke(main, ["runs", "--format", "json"])
    assert r.exit_code == 0 and json.loads(r.output)["attempts"][0]["class"] == "none"


def test_two_supervisors_in_one_directory_keep_their_runs_apart(tmp_path):
    def at(n, run, code=1):
        return Attempt(n, "torchrun t.py", "s", "e", code, f"logs/{run}-{n}.log", "cuda_oom", run=run)

    for a in (at(1, "A"), at(1, "B"), at(2, "A"), at(2, "B", 0), at(3, "A", 0)):
        ledger.append(a, tmp_path)
    got = ledger.read(tmp_path)
    assert [[(a.run, a.attempt) for a in r] for r in ledger.runs(got)] == [
        [("A", 1), ("A", 2), ("A", 3)], [("B", 1), ("B", 2)]]
    assert json.loads(ledger.ledger_path(tmp_path).read_text().splitlines()[0])["run"] == "A"


def test_malformed_lines_and_infinity_are_skipped_never_a_traceback(tmp_path):
    good = Attempt(1, "x", "s", "e", 0, "l", "none", run="R")
    ledger.append(good, tmp_path)
    with open(ledger.ledger_path(tmp_path), "a", encoding="utf-8") as f:
        for line in ('{"attempt": Infinity, "command": "x", "started": "s", "ended": "e", "exit_code": 0, '
                     '"log": "l"}', '{"attempt": 1, "command": "x", "started": "s", "ended": "e", '
                     '"exit_code": NaN, "log": "l"}', "null", "[1]", '"text"', "1e400", '{"attempt": true}',
                     '{"attempt": 1, "command": 5, "started": "s", "ended": "e", "exit_code": 0, "log": "l"}',
                     '{"attempt": 1, "command": "x", "started": "s", "ended": "e", "exit_code": 0, "log": "l", '
                     '"files": "abc"}', '{"event": "started", "attempt": "1"}', "[" * 100000):
            f.write(line + "\n")
        f.buffer.write(b"\xff\xfe not utf-8\n") if hasattr(f, "buffer") else None
    ledger.append(good, tmp_path)
    assert ledger.read(tmp_path) == [good, good]
    r = CliRunner().invoke(main, ["runs"], catch_exceptions=False)
    assert r.exit_code == 0


def test_a_record_after_a_line_cut_by_a_kill_is_kept(tmp_path):
    ledger.append(Attempt(1, "x", "s", "e", 1, "l", "cuda_oom", run="R"), tmp_path)
    with open(ledger.ledger_path(tmp_path), "a") as f:
        f.write('{"attempt": 2, "comm')  # a kill mid-append: no newline
    nxt = Attempt(2, "x", "s", "e", 0, "l", "none", run="R")
    ledger.append(nxt, tmp_path)
    assert ledger.read(tmp_path)[-1] == nxt


def test_started_records_and_old_records_together(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    old = {"attempt": 1, "command": "torchrun t.py", "started": "s", "ended": "e", "exit_code": 0, "log": "l",
           "class": "none", "rule": None, "files": [], "stopped_by": None}  # a ledger written before verdicts
    (tmp_path / ".oomfix").mkdir()
    (tmp_path / ".oomfix" / "runs.jsonl").write_text(json.dumps(old) + "\n")
    ledger.append(ledger.Started(1, "torchrun t.py", "s2", "logs/b.log", "B", "node7", 4242), tmp_path)
    events = ledger.read_events(tmp_path)
    assert [type(e).__name__ for e in events] == ["Attempt", "Started"]
    assert ledger.read(tmp_path)[0].verdict is None and ledger.read(tmp_path)[0].next_env == {}
    (u,) = ledger.unfinished(events)
    assert u.host == "node7" and u.pid == 4242
    r = CliRunner().invoke(main, ["runs"])
    assert "started, no end recorded: run B attempt 1 on node7 (pid 4242)" in r.output and "run 1: 1 attempt" in r.output
    r = CliRunner().invoke(main, ["runs", "--format", "json"])
    assert json.loads(r.output)["unfinished"][0]["event"] == "started"


def test_the_ledger_as_a_directory_is_a_one_line_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".oomfix" / "runs.jsonl").mkdir(parents=True)
    r = CliRunner().invoke(main, ["runs"])
    assert r.exit_code == 2 and "is a directory" in r.output


def test_run_lock_lets_one_attempt_of_a_run_at_a_time(tmp_path):
    waited = []
    with ledger.run_lock("R", tmp_path):
        import subprocess
        import sys

        code = ("import sys; from oomfix import ledger\n"
                "with ledger.run_lock('R', sys.argv[1], on_wait=lambda: print('waiting', flush=True)):\n"
                "    print('got it')\n")
        p = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
        first = p.stdout.readline()
        waited.append(first.strip())
    out = p.communicate(timeout=30)[0]
    assert waited == ["waiting"] and "got it" in out


def test_a_state_directory_that_is_a_file_or_a_symlink_is_refused(tmp_path, monkeypatch):
    import os

    import pytest

    from oomfix.errors import InputError

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / ".oomfix").write_text("a file")
    with pytest.raises(InputError, match="not a directory|cannot create"):
        ledger.append(Attempt(1, "x", "s", "e", 0, "l", "none"), tmp_path / "a")
    (tmp_path / "b").mkdir()
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", tmp_path / "b" / ".oomfix")
    with pytest.raises(InputError, match="symlink"):
        with ledger.run_lock("R", tmp_path / "b"):
            pass
    assert list((tmp_path / "elsewhere").iterdir()) == []
    monkeypatch.chdir(tmp_path / "a")
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "oomfix", "run", "--once", "--", "true"], capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr and ".oomfix" in r.stderr


def test_a_huge_ledger_is_read_from_its_end(tmp_path, monkeypatch):
    monkeypatch.setattr(ledger, "MAX_READ", 4096)
    for n in range(1, 200):
        ledger.append(Attempt(n, "x", "s", "e", 1, "l", "cuda_oom", run="R"), tmp_path)
    got = ledger.read(tmp_path)
    assert got[-1].attempt == 199 and 0 < len(got) < 199
    assert [a.attempt for a in got] == list(range(got[0].attempt, 200))


def test_a_run_that_trained_is_over_a_later_attempt_of_its_id_is_a_new_run():
    a = [Attempt(1, "job", "t0", "t1", 0, "a1.log", "none", run="cmd-x", verdict="trained"),
         Attempt(2, "job", "t2", "t3", 1, "a2.log", "python_exception", run="cmd-x", verdict="permanent"),
         Attempt(3, "job", "t4", "t5", 1, "a3.log", "python_exception", run="cmd-x", verdict="permanent")]
    assert [[x.attempt for x in r] for r in ledger.runs(a)] == [[1], [2, 3]]


def test_the_log_sha256_of_oomfix_verdict_round_trips_and_is_absent_otherwise():
    a = Attempt(1, "(oomfix verdict)", "t0", "t1", 1, "p.log", "port_in_use", run="r", log_sha256="ab" * 32)
    assert Attempt.from_json(json.loads(json.dumps(a.to_json()))) == a
    assert "log_sha256" not in Attempt(1, "job", "t0", "t1", 0, "a.log", "none").to_json()
