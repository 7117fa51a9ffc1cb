"""The real-log dev corpus (../shared/corpus/logs), scored as ../shared/tools/score-logs scores it.

Targets (issue 9): accuracy >= 97%, no harmful answer (a memory class for a non-memory failure), no `none` ("no
failure found") for a log labelled as a failure, and the root rank right on >= 95% of the logs that name one.
"""
import json
import subprocess
import sys

import pytest

from conftest import SHARED, oomfix_cmd, shared_or_skip
from oomfix.diagnose import diagnose_logs

CORPUS = SHARED / "corpus" / "logs"
MEMORY = {"cuda_oom", "host_oom"}


def _score():
    labels = json.loads((CORPUS / "labels.json").read_text())
    ok, harmful, nones, misses, rank_ok, rank_n, rank_misses = 0, [], [], [], 0, 0, []
    for case in labels:
        d = diagnose_logs([str(CORPUS / case["file"])]).to_json()
        got = d["class"]
        if got in case["accept"]:
            ok += 1
        else:
            misses.append((case["file"], got))
        if got in MEMORY and not MEMORY & set(case["accept"]):
            harmful.append(case["file"])
        if got == "none" and "none" not in case["accept"]:
            nones.append(case["file"])
        if case.get("root_rank") is not None and got in case["accept"]:
            rank_n += 1
            rc = d["root_cause"]
            if case["root_rank"] in (rc["rank"], rc["local_rank"]):
                rank_ok += 1
            else:
                rank_misses.append((case["file"], rc["rank"], rc["local_rank"]))
    return labels, ok, harmful, nones, misses, rank_ok, rank_n, rank_misses


def test_corpus_accuracy_no_harm_no_none_and_root_rank():
    shared_or_skip(CORPUS / "labels.json")
    labels, ok, harmful, nones, misses, rank_ok, rank_n, rank_misses = _score()
    assert not harmful, f"memory class for a non-memory failure: {harmful}"
    assert not nones, f"'none' for a failed run: {nones}"
    assert ok / len(labels) >= 0.97, f"accuracy {ok}/{len(labels)}; misses {misses}"
    assert rank_n == 0 or rank_ok / rank_n >= 0.95, f"root rank {rank_ok}/{rank_n}; misses {rank_misses}"


@pytest.mark.slow  # one process per corpus log: about a minute
def test_the_scoring_tool_agrees():
    """The shared tool runs the command line; its last line must meet the same targets."""
    tool = SHARED / "tools" / "score-logs"
    shared_or_skip(tool)
    p = subprocess.run([sys.executable, str(tool), "--oomfix", " ".join(oomfix_cmd())], capture_output=True,
                       text=True, timeout=600)
    last = p.stdout.strip().splitlines()[-1]
    assert "harmful 0" in last and "errors 0" in last and "none-on-failure 0" in last, last
    assert float(last.split("(")[1].split("%")[0]) >= 97, last


# The clean-run corpus (issue 17): real logs of runs that finished, and whole failed-run files. Its manifest is
# fixtures/clean_runs/labels.json; the logs live beside the project (see fixtures/clean_runs/README.md).
def _clean_dir():
    import os
    from pathlib import Path

    env = os.environ.get("OOMFIX_CLEAN_CORPUS")
    return Path(env) if env else SHARED / "corpus" / "clean_runs"


def test_clean_runs_no_false_alarm_and_failed_runs_right():
    from pathlib import Path

    labels = json.loads((Path(__file__).parent.parent / "fixtures" / "clean_runs" / "labels.json").read_text())
    where = _clean_dir()
    if not (where / labels[0]["file"]).exists():
        import pytest

        pytest.skip(f"clean-run corpus not present at {where} (see fixtures/clean_runs/README.md)")
    alarms, misses, nones = [], [], []
    for case in labels:
        got = diagnose_logs([str(where / case["file"])]).to_json()["class"]
        if case["accept"] == ["none"]:
            if got != "none":
                alarms.append((case["file"], got))
        elif got not in case["accept"]:
            misses.append((case["file"], got))
            if got == "none":
                nones.append(case["file"])
    assert len([c for c in labels if c["accept"] == ["none"]]) >= 40
    assert not alarms, f"false alarms on clean runs: {alarms}"
    assert not nones, f"'none' for a failed run: {nones}"
    assert not misses, f"failed runs misread: {misses}"
