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
