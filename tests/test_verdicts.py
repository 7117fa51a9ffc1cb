"""The verdict table (oomfix/verdicts.py) and the scheduler snippets under docs/schedulers/: each snippet is parsed
(YAML with yaml.safe_load, the sbatch script with `bash -n` and its #SBATCH lines) and its exit-code mapping is
checked against the table."""
from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from oomfix import verdicts
from oomfix.cli import run_cmd

ROOT = Path(__file__).resolve().parent.parent
SNIPPETS = ROOT / "docs" / "schedulers"
RETRY = set(verdicts.RETRYABLE_CODES)
STOP = set(verdicts.STOP_CODES)
RUN_OPTIONS = {o for p in run_cmd.params for o in getattr(p, "opts", ())}


def test_the_table():
    codes = [v.exit_code for v in verdicts.TABLE]
    assert len(set(codes)) == len(codes)
    assert RETRY == {138, 143} and STOP == {2, 3, 4}
    # Kubeflow's restartPolicy ExitCode: 1-127 permanent, 128-255 retryable; the codes need no mapping there
    assert all(128 <= c <= 255 for c in RETRY) and all(1 <= c <= 127 for c in STOP)
    assert verdicts.for_class_without_remedy("sigterm") is verdicts.OUTSIDE
    assert verdicts.for_class_without_remedy("sighup") is verdicts.OUTSIDE
    assert verdicts.for_class_without_remedy("cuda_oom") is verdicts.NO_RUNG
    assert verdicts.for_class_without_remedy("python_exception") is verdicts.PERMANENT
    assert verdicts.for_class_without_remedy("segfault") is verdicts.PERMANENT


def _oomfix_and_torchrun(argv: list[str]) -> tuple[list[str], list[str]]:
    """The `oomfix run` options of a command line and the torchrun command under it."""
    i = argv.index("oomfix")
    j = argv.index("--", i)
    opts, job = argv[i + 2:j], argv[j + 1:]
    assert argv[i + 1] == "run" and "--once" in opts
    for o in opts:
        if o.startswith("--"):
            assert o.split("=")[0] in RUN_OPTIONS, f"{o} is not an `oomfix run` option"
    assert job[0] == "torchrun"
    k = job.index("--max-restarts")
    assert job[k + 1] == "0"  # torchrun does not restart the workers itself: oomfix decides the next attempt
    return opts, job


def _grace(opts: list[str]) -> float:
    return float(opts[opts.index("--grace") + 1]) if "--grace" in opts else 30.0


def test_sbatch_script():
    path = SNIPPETS / "slurm.sbatch"
    if shutil.which("bash"):
        assert subprocess.run(["bash", "-n", str(path)], capture_output=True).returncode == 0
    text = path.read_text()
    sbatch = [line.split(None, 1)[1].strip() for line in text.splitlines() if line.startswith("#SBATCH ")]
    assert "--requeue" in sbatch
    (signal,) = [s for s in sbatch if s.startswith("--signal=")]
    m = re.fullmatch(r"--signal=B:USR1@(\d+)", signal)
    assert m
    # the oomfix command: the lines from `oomfix run` to the one without a continuation
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("oomfix run"))
    cmd = []
    for line in lines[start:]:
        cmd.append(line.rstrip(" \\&"))
        if not line.rstrip().endswith("\\"):
            break
    argv = shlex.split(" ".join(cmd))
    opts, _ = _oomfix_and_torchrun(argv)
    assert int(m.group(1)) > _grace(opts)  # the warning comes before the grace period needs to start
    assert opts[opts.index("--run-id") + 1] == "$SLURM_JOB_ID"
    # the requeue happens exactly on the retryable verdicts
    (case,) = re.findall(r"^\s*([\d|]+)\)\s*scontrol requeue", text, re.M)
    assert {int(c) for c in case.split("|")} == RETRY
    assert "trap 'kill -USR1" in text


def test_kubernetes_job_pod_failure_policy():
    doc = yaml.safe_load((SNIPPETS / "kubernetes-job.yaml").read_text())
    assert doc["kind"] == "Job"
    spec = doc["spec"]
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    rules = spec["podFailurePolicy"]["rules"]
    by_action: dict[str, set[int]] = {}
    for r in rules:
        if "onExitCodes" in r:
            assert r["onExitCodes"]["operator"] == "In"
            by_action.setdefault(r["action"], set()).update(r["onExitCodes"]["values"])
    assert by_action["FailJob"] == STOP and by_action["Count"] == RETRY
    assert any(r["action"] == "Ignore" and r.get("onPodConditions") for r in rules)
    (c,) = pod["containers"]
    opts, _ = _oomfix_and_torchrun(c["command"])
    assert pod["terminationGracePeriodSeconds"] > _grace(opts)
    assert any(e["name"] == "OOMFIX_RUN_ID" for e in c["env"])


def test_kubeflow_pytorchjob_exit_code_policy():
    doc = yaml.safe_load((SNIPPETS / "kubeflow-pytorchjob.yaml").read_text())
    assert doc["kind"] == "PyTorchJob"
    for replica in doc["spec"]["pytorchReplicaSpecs"].values():
        # ExitCode: 1-127 permanent, 128-255 retryable (the training-operator's own rule)
        assert replica["restartPolicy"] == "ExitCode"
        pod = replica["template"]["spec"]
        (c,) = pod["containers"]
        opts, _ = _oomfix_and_torchrun(c["command"])
        assert pod["terminationGracePeriodSeconds"] > _grace(opts)
        assert any(e["name"] == "OOMFIX_RUN_ID" for e in c["env"])
    assert all(128 <= c <= 255 for c in RETRY) and all(1 <= c <= 127 for c in STOP)


def test_skypilot_task():
    doc = yaml.safe_load((SNIPPETS / "skypilot.yaml").read_text())
    rec = doc["resources"]["job_recovery"]
    codes = rec["recover_on_exit_codes"]
    assert set(codes if isinstance(codes, list) else [codes]) == RETRY
    assert rec["max_restarts_on_errors"] == 0
    run = " ".join(line.rstrip("\\") for line in doc["run"].splitlines() if not line.strip().startswith("#"))
    argv = shlex.split(run[run.index("oomfix run"):])
    opts, _ = _oomfix_and_torchrun(argv)
    assert opts[opts.index("--run-id") + 1] == "$SKYPILOT_TASK_ID"


@pytest.mark.parametrize("name", ["slurm.sbatch", "kubernetes-job.yaml", "kubeflow-pytorchjob.yaml", "skypilot.yaml"])
def test_docs_name_each_snippet_and_show_the_table(name):
    doc = (ROOT / "docs" / "schedulers.md").read_text()
    assert f"schedulers/{name}" in doc
    assert verdicts.render_table_markdown() in doc


def _stub(bin_dir: Path, name: str, body: str) -> None:
    p = bin_dir / name
    p.write_text("#!/bin/bash\n" + body)
    p.chmod(0o755)


@pytest.mark.parametrize("code,requeued", [(0, False), (138, True), (143, True), (3, False), (4, False), (2, False)])
def test_sbatch_script_requeues_exactly_on_the_retryable_verdicts(tmp_path, code, requeued):
    # the script itself, run by bash with stand-ins for `oomfix` (exits with a verdict) and `scontrol`
    if not shutil.which("bash"):
        pytest.skip("no bash")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _stub(bin_dir, "oomfix", f"echo \"$@\" > {tmp_path}/oomfix.args\nexit {code}\n")
    _stub(bin_dir, "scontrol", f"echo \"$@\" > {tmp_path}/scontrol.args\n")
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "SLURM_JOB_ID": "4242", "SLURM_SUBMIT_DIR": str(tmp_path)}
    r = subprocess.run(["bash", str(SNIPPETS / "slurm.sbatch")], env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == code
    assert (tmp_path / "scontrol.args").exists() == requeued
    if requeued:
        assert (tmp_path / "scontrol.args").read_text().split() == ["requeue", "4242"]
    assert "--run-id 4242" in (tmp_path / "oomfix.args").read_text()


def test_sbatch_script_forwards_slurms_warning_signal(tmp_path):
    # --signal=B:USR1@T: SLURM signals the batch shell; the script passes USR1 on to oomfix, which stops the job and
    # exits 143 (outside), and the job is requeued
    if not shutil.which("bash"):
        pytest.skip("no bash")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _stub(bin_dir, "oomfix", f"trap 'exit 143' USR1\ntouch {tmp_path}/started\nwhile :; do sleep 0.05; done\n")
    _stub(bin_dir, "scontrol", f"echo \"$@\" > {tmp_path}/scontrol.args\n")
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "SLURM_JOB_ID": "7", "SLURM_SUBMIT_DIR": str(tmp_path)}
    p = subprocess.Popen(["bash", str(SNIPPETS / "slurm.sbatch")], env=env)
    import time

    deadline = time.monotonic() + 20
    while not (tmp_path / "started").exists():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    p.send_signal(__import__("signal").SIGUSR1)
    assert p.wait(timeout=20) == 143
    assert (tmp_path / "scontrol.args").read_text().split() == ["requeue", "7"]


GENUINE_LF = Path(__file__).resolve().parent.parent.parent / "shared" / "corpus" / "genuine_lf"


@pytest.mark.parametrize("log,code", [
    ("clean_job_a.log", 0), ("oomfix_run_survived_terminal_close_clean.log", 0),
    ("sighup_interactive_nohup_job_a.log", 143), ("sighup_tmux_script_held_job_b.log", 143),
    ("sigterm_agent_job_a.log", 143),
    ("port_in_use.log", 138),
    ("exc_bad_row.log", 3), ("exc_missing_template.log", 3),
])
def test_verdicts_of_the_genuine_llamafactory_logs(log, code):
    # the genuine LLaMA-Factory runs of ../shared/corpus/genuine_lf (dry run: nothing is written)
    from conftest import shared_or_skip

    shared_or_skip(GENUINE_LF / log)
    r = subprocess.run([sys.executable, "-m", "oomfix", "verdict", str(GENUINE_LF / log)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == code, r.stdout + r.stderr
