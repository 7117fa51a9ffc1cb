"""The verdict table (oomfix/verdicts.py) and the scheduler snippets under docs/schedulers/: each snippet is parsed
(YAML with yaml.safe_load, the sbatch script with `bash -n` and its #SBATCH lines) and its exit-code mapping is
checked against the table."""
from __future__ import annotations

import json
import os
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


def _slurm_env(tmp_path: Path, oomfix_body: str, job_id: str) -> dict[str, str]:
    """The environment the sbatch script runs in: stand-ins for `oomfix` (given its body) and `scontrol` (which
    records its arguments), a SLURM job id."""
    if not shutil.which("bash"):
        pytest.skip("no bash")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _stub(bin_dir, "oomfix", oomfix_body)
    _stub(bin_dir, "scontrol", f"echo \"$@\" > {tmp_path}/scontrol.args\n")
    return {"PATH": f"{bin_dir}:/usr/bin:/bin", "SLURM_JOB_ID": job_id, "SLURM_SUBMIT_DIR": str(tmp_path)}


@pytest.mark.parametrize("code,requeued", [(0, False), (138, True), (143, True), (3, False), (4, False), (2, False)])
def test_sbatch_script_requeues_exactly_on_the_retryable_verdicts(tmp_path, code, requeued):
    # the script itself, run by bash with stand-ins for `oomfix` (exits with a verdict) and `scontrol`
    env = _slurm_env(tmp_path, f"echo \"$@\" > {tmp_path}/oomfix.args\nexit {code}\n", "4242")
    r = subprocess.run(["bash", str(SNIPPETS / "slurm.sbatch")], env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == code
    assert (tmp_path / "scontrol.args").exists() == requeued
    if requeued:
        assert (tmp_path / "scontrol.args").read_text().split() == ["requeue", "4242"]
    assert "--run-id 4242" in (tmp_path / "oomfix.args").read_text()


def test_sbatch_script_forwards_slurms_warning_signal(tmp_path):
    # --signal=B:USR1@T: SLURM signals the batch shell; the script passes USR1 on to oomfix, which stops the job and
    # exits 143 (outside), and the job is requeued
    env = _slurm_env(tmp_path, f"trap 'exit 143' USR1\ntouch {tmp_path}/started\nwhile :; do sleep 0.05; done\n", "7")
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


# --- `trained` needs evidence of a finish; a death by signal with no failure in the log ----------------------------

def _diag(cls: str, confidence: str = "medium", finished: bool = False, reason: str | None = None):
    from oomfix.model import Diagnosis, RootCause

    return Diagnosis(cls, confidence, reason, RootCause(), finished=finished)


def _attempt(verdict: str, exit_code: int, cls: str | None):
    from oomfix.ledger import Attempt

    return Attempt(1, "job", "t0", "t1", exit_code, "a.log", cls, verdict=verdict)


def test_trained_needs_a_finish_or_exit_status_zero():
    u = verdicts.unexplained_end
    assert u(_diag("none", "high", finished=True), None)[0] is verdicts.TRAINED
    assert u(_diag("none"), 0)[0] is verdicts.TRAINED  # the job's own exit status 0
    # no finish and no exit status: an empty or cut log is not a finished job
    assert u(_diag("none"), None)[0] is verdicts.OUTSIDE
    assert u(_diag("none", reason="the log is empty"), None)[1].startswith("the log is empty")
    assert u(_diag("none"), 1)[0] is verdicts.PERMANENT
    assert u(_diag("cuda_oom", "high"), None) is None  # a cause in the log: its class decides


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT", "SIGHUP", "SIGUSR1"])
def test_a_job_killed_by_a_stop_signal_is_outside(sig):
    import signal

    v, why = verdicts.unexplained_end(_diag("none"), 128 + signal.Signals[sig])
    assert v is verdicts.OUTSIDE and sig in why


def test_a_bare_sigkill_is_outside_once_then_permanent():
    u = verdicts.unexplained_end
    low = _diag("host_oom", "low")  # classify.py's bare SIGKILL: no OOM-killer line
    assert u(low, None)[0] is verdicts.OUTSIDE and u(_diag("none"), 137)[0] is verdicts.OUTSIDE
    assert u(low, 1, [_attempt("outside", 137, "none")])[0] is verdicts.PERMANENT
    assert u(_diag("none"), 137, [_attempt("outside", 1, "host_oom")])[0] is verdicts.PERMANENT
    # a SIGTERM before it is not a SIGKILL in a row; an OOM-killer line is evidence: the memory ladder decides
    assert u(low, None, [_attempt("outside", 143, "none")])[0] is verdicts.OUTSIDE
    assert u(_diag("host_oom", "high"), 137) is None


CLEAN_LF = GENUINE_LF / "clean_job_a.log"


def _verdict(*args, cwd=None):
    env = {k: v for k, v in os.environ.items() if k not in ("OOMFIX_RUN_ID", "SLURM_JOB_ID", "SKYPILOT_TASK_ID")}
    return subprocess.run([sys.executable, "-m", "oomfix", "verdict", *args], capture_output=True, text=True,
                          timeout=60, cwd=cwd, env=env)


def test_a_cut_or_empty_log_is_not_trained(tmp_path):
    from conftest import shared_or_skip

    shared_or_skip(CLEAN_LF)
    lines = CLEAN_LF.read_bytes().splitlines(keepends=True)
    step10 = next(i for i, line in enumerate(lines) if b" 10/160 [" in line)
    (tmp_path / "cut.log").write_bytes(b"".join(lines[:step10 + 1]))  # the genuine log cut at step 10 of 160
    (tmp_path / "empty.log").write_bytes(b"")
    for name in ("cut.log", "empty.log"):
        r = _verdict(str(tmp_path / name), "--format", "json")
        out = json.loads(r.stdout)
        assert r.returncode == 143 and out["verdict"] == "outside" and out["class"] == "none", r.stdout
    assert "the log is empty" in _verdict(str(tmp_path / "empty.log")).stdout
    assert _verdict(str(CLEAN_LF)).returncode == 0  # the whole log: its finish is there
    r = _verdict(str(tmp_path / "cut.log"), "--exit-code", "0")  # the job said it finished
    assert r.returncode == 0 and "trained" in r.stdout
    assert _verdict(str(tmp_path / "empty.log"), "--exit-code", "143").returncode == 143


def test_verdict_write_twice_records_and_fixes_once(tmp_path):
    from conftest import shared_or_skip

    from oomfix import ledger

    shared_or_skip(GENUINE_LF / "port_in_use.log")
    (tmp_path / "p.log").write_bytes((GENUINE_LF / "port_in_use.log").read_bytes())
    runs = [_verdict("p.log", "--write", "--format", "json", cwd=tmp_path) for _ in range(2)]
    assert [r.returncode for r in runs] == [138, 138], runs[0].stderr
    first, second = (json.loads(r.stdout) for r in runs)
    assert first["written"] and second["written"]
    assert first["next_env"]["MASTER_PORT"] == second["next_env"]["MASTER_PORT"]  # one free port, not two
    assert len(ledger.read(tmp_path)) == 1 and "nothing applied twice" in second["reason"]
    err = [line for r in runs for line in r.stderr.splitlines() if line.strip()]
    assert err and all(line.startswith("oomfix verdict:") for line in err), err
    # a new log (the next attempt's, at the same path) is a new attempt of the same run
    (tmp_path / "p.log").write_bytes((GENUINE_LF / "port_in_use.log").read_bytes() + b"\n")
    third = json.loads(_verdict("p.log", "--write", "--format", "json", cwd=tmp_path).stdout)
    attempts = ledger.read(tmp_path)
    assert [a.attempt for a in attempts] == [1, 2] and attempts[0].run == attempts[1].run
    assert third["verdict"] == "fixed" and "nothing applied twice" not in third["reason"]
