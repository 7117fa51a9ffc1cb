"""`oomfix diagnose` through the real command line: output, exit codes, errors."""
import json
import subprocess

import pytest
from click.testing import CliRunner

from conftest import FIXTURES, ROOT, oomfix_cmd
from oomfix.cli import main

OOM = FIXTURES / "constructed" / "lf_cuda_oom_rank2.log"


def run(*args, input=None):
    return CliRunner().invoke(main, list(args), input=input)


def test_seed_story_sighup_is_not_memory():
    r = run("diagnose", "--format", "json", str(FIXTURES / "constructed" / "lf_sighup.log"))
    assert r.exit_code == 0
    d = json.loads(r.output)
    assert d["class"] == "sighup"
    text = " ".join(d["advice"])
    assert "setsid" in text and "nohup" in text and "--signals-to-handle" in text
    assert "per_device_train_batch_size" not in text.replace("never raise per_device_train_batch_size", "")


def test_seed_story_sigterm_without_earlier_failure():
    d = json.loads(run("diagnose", "--format", "json", str(FIXTURES / "torchrun" / "sigterm_agent.log")).output)
    assert d["class"] == "sigterm"


def test_seed_story_oom_on_rank2_with_three_rank_cascade():
    r = run("diagnose", str(OOM))
    assert r.exit_code == 0
    assert r.output.splitlines()[0].startswith("Root cause: CUDA out of memory on rank 2 (gpu-node-01) at step 3/51; "
                                               "ranks 0, 1, 3 were stopped by torchrun as a consequence")
    d = json.loads(run("diagnose", "--format", "json", str(OOM)).output)
    assert d["root_cause"]["rank"] == 2 and [c["rank"] for c in d["cascade"]] == [0, 1, 3]
    assert d["memory"]["requested_gib"] == 3.2 and d["memory"]["total_gib"] == 79.25


def test_json_has_every_documented_key_even_when_unknown(tmp_path):
    p = tmp_path / "empty.log"
    p.write_text("")
    d = json.loads(run("diagnose", "--format", "json", str(p)).output)
    assert d["class"] == "none"
    assert set(d) >= {"class", "confidence", "root_cause", "cascade", "evidence", "run", "memory", "advice"}
    assert set(d["root_cause"]) >= {"rank", "local_rank", "host", "exitcode", "signal", "exception", "message",
                                    "file", "line", "phase"}
    assert set(d["run"]) >= {"config", "master_port", "world_size", "per_device_train_batch_size",
                             "gradient_accumulation_steps", "global_batch_size"}


def test_stdin():
    r = run("diagnose", "--format", "json", "-", input=OOM.read_text())
    assert json.loads(r.output)["class"] == "cuda_oom"


@pytest.mark.parametrize("arg,msg", [("missing.log", "no such file"), (".", "is a directory")])
def test_bad_input_is_one_line_and_exit_2(arg, msg, tmp_path):
    p = subprocess.run(oomfix_cmd() + ["diagnose", arg], capture_output=True, text=True, cwd=tmp_path)
    assert p.returncode == 2
    assert p.stderr.count("\n") == 1 and msg in p.stderr and "Traceback" not in p.stderr


def test_permission_denied(tmp_path, monkeypatch):
    # root (as in CI) reads a chmod 0 file anyway, so the refusal is injected where the file is opened
    import builtins

    p = tmp_path / "x.log"
    p.write_text("x")
    real_open = builtins.open

    def fake_open(path, *a, **k):
        if str(path) == str(p):
            raise PermissionError(13, "Permission denied")
        return real_open(path, *a, **k)

    monkeypatch.setattr(builtins, "open", fake_open)
    r = run("diagnose", str(p))
    assert r.exit_code == 2 and "permission denied" in r.output


def test_no_colour_when_not_a_terminal():
    assert "\x1b[" not in run("diagnose", str(OOM)).output


def test_python_m_oomfix_works():
    p = subprocess.run(oomfix_cmd() + ["--version"], capture_output=True, text=True, cwd=ROOT)
    assert p.returncode == 0 and "oomfix" in p.stdout


@pytest.mark.parametrize("args", [["diagnose"], ["diagnose", "--format", "xml", "x.log"], ["nope"]])
def test_usage_errors_are_one_line_and_exit_2(args, tmp_path):
    p = subprocess.run(oomfix_cmd() + args, capture_output=True, text=True, cwd=tmp_path)
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and p.stderr.startswith("oomfix: error: ")
