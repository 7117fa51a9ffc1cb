"""`oomfix jobs`: the JSON interface tools rely on, the text for people, and the labelled corpus of real launchers."""
import json
import re
import subprocess
import sys

import pytest
from click.testing import CliRunner

from conftest import ROOT, SHARED, shared_or_skip
from oomfix.cli import main

KEYS = ["file", "line", "launcher", "background", "nohup", "protected_by", "config", "master_port", "gpus", "nproc",
        "log"]


def cli(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_json_interface(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "l.sh").write_text("CUDA_VISIBLE_DEVICES=0,1 nohup llamafactory-cli train c/a.yaml > a.log 2>&1 &\n"
                                   "torchrun --standalone --nproc_per_node 2 t.py\n")
    r = cli("jobs", "l.sh", "--format", "json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert list(out) == ["schema_version", "jobs"] and out["schema_version"] == 1
    assert [list(j) for j in out["jobs"]] == [KEYS, KEYS]
    a, b = out["jobs"]
    assert (a["launcher"], a["background"], a["nohup"], a["protected_by"], a["config"], a["master_port"], a["gpus"],
            a["nproc"], a["log"]) == ("llamafactory-cli", True, True, None, "c/a.yaml", "free", "0,1", 2, "a.log")
    assert (b["line"], b["launcher"], b["master_port"], b["gpus"], b["log"]) == (2, "torchrun", "free", None, None)


def test_text_says_unset_never_none(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "l.sh").write_text("torchrun t.py\n")
    (tmp_path / "empty.sh").write_text("echo torchrun t.py\n")
    r = cli("jobs", "l.sh", "empty.sh")
    assert r.exit_code == 0 and "None" not in r.output
    assert "config: unset" in r.output and "29500 (default)" in r.output and "empty.sh: no training job" in r.output


def test_missing_script_is_one_line_exit_2(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(main, ["jobs", "nope.sh"])
    assert r.exit_code == 2 and "nope.sh" in r.output and "Traceback" not in r.output


@pytest.mark.slow  # the corpus scorer: one process per script and command
def test_score_launchers_on_the_labelled_corpus():
    """Every labelled hazard found and none invented; job counts and fields as the issue requires."""
    corpus = SHARED / "corpus" / "launchers"
    shared_or_skip(corpus)
    tool = SHARED / "tools" / "score-launchers"
    p = subprocess.run([sys.executable, str(tool), str(corpus), "--oomfix", f"{sys.executable} -m oomfix"],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    last = p.stdout.strip().splitlines()[-1]
    m = re.match(r"jobs (\d+)/(\d+) files, fields (\d+)/(\d+), hazards tp (\d+) fp (\d+) fn (\d+), errors (\d+)", last)
    assert m, p.stdout + p.stderr
    files, nfiles, fields, nfields, tp, fp, fn, errors = map(int, m.groups())
    assert files >= 20 and fields >= 0.95 * nfields and fp == 0 and fn == 0 and errors == 0, p.stdout


@pytest.mark.parametrize("name,kills", [("01_setsid_nohup_disown.sh", [6, 7]), ("03_tmux_pkill_port.sh", [7, 8]),
                                        ("41_dist_launch_then_kill_all.sh", [4]), ("06_fastchat_vicuna7b.sh", [])])
def test_kill_by_name_is_a_warning_on_real_launchers(tmp_path, monkeypatch, name, kills):
    src = SHARED / "corpus" / "launchers" / name
    shared_or_skip(src)
    (tmp_path / name).write_bytes(src.read_bytes())
    monkeypatch.chdir(tmp_path)
    r = cli("check", name, "--format", "json")
    found = [f for f in json.loads(r.output)["findings"] if f["id"] == "kill-by-name"]
    assert [f["line"] for f in found] == kills and all(f["severity"] == "warning" for f in found)


def test_background_job_in_a_loop_collides_with_itself(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "l.sh").write_text("for s in 1 2 3; do\n  setsid torchrun --master_port 29500 t.py --seed $s > "
                                   "run_$s.log &\ndone\nwait\n")
    r = cli("check", "--format", "json")
    got = {f["id"] for f in json.loads(r.output)["findings"]}
    assert got == {"port-collision", "gpu-overlap"}  # logs differ per run: no log collision
    (tmp_path / "l.sh").write_text("for g in 0 1 2 3; do\n  CUDA_VISIBLE_DEVICES=$g setsid torchrun "
                                   "--master_port $((29500 + g)) t.py > run_$g.log &\ndone\nwait\n")
    r = cli("check", "--format", "json")
    assert json.loads(r.output)["findings"] == []


def test_a_seeded_random_port_is_a_fixed_port(tmp_path, monkeypatch):
    # timm's distributed_train.sh shape: `RANDOM=1485` then `--master_port=$RANDOM`: every run picks 21703
    monkeypatch.chdir(tmp_path)
    (tmp_path / "d.sh").write_text("#!/bin/bash\nNUM_PROC=$1\nRANDOM=1485\nshift\n"
                                   "python3 -m torch.distributed.launch --nproc_per_node=$NUM_PROC "
                                   "--master_port=$RANDOM train.py \"$@\"\n")
    r = cli("jobs", "d.sh", "--format", "json")
    assert json.loads(r.output)["jobs"][0]["master_port"] == 21703
