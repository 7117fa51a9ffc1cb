"""`oomfix run` / `oomfix runs` (oomfix/supervise.py, oomfix/ledger.py).

The end-to-end tests start a genuine `torchrun --nproc_per_node 2` (gloo, CPU) on tests/e2e/stand_in_train.py and
skip when torch is absent; CI installs torch 2.13.0 for CPU (`.ci/run`). The others need no torch.
"""
from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import json
import textwrap
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from oomfix import ledger
from oomfix.cli import main
from oomfix.supervise import (Terminal, attempt_log, child_argv, config_of_command, exit_status, newest_checkpoint,
                              resume_argv, RunOptions, supervisor_log, with_port)

from conftest import SHARED, shared_or_skip

ROOT = Path(__file__).resolve().parent.parent
SHARED_LOGS = SHARED / "corpus" / "logs"
STAND_IN = ROOT / "tests" / "e2e" / "stand_in_train.py"
OOMFIX = [sys.executable, "-m", "oomfix"]
LF_CONFIG = textwrap.dedent("""\
    ### model
    model_name_or_path: Qwen/Qwen3-0.6B
    stage: sft
    do_train: true
    finetuning_type: lora
    ### train
    per_device_train_batch_size: {micro}   # what fits on one device
    gradient_accumulation_steps: {accum}
    max_steps: {steps}
    output_dir: out
    """)


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1", NO_COLOR="1", **extra)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    return env


# --- names, ports, resume: pure helpers ----------------------------------------------------------------------------

def test_attempt_logs_are_numbered_and_kept_apart():
    assert attempt_log("logs/train.log", 1) == "logs/train-attempt1.log"
    assert attempt_log("logs/train.log", 12) == "logs/train-attempt12.log"
    assert attempt_log("out/train", 2) == "out/train-attempt2.log"
    assert supervisor_log("logs/train.log") == "logs/train-supervisor.log"


@pytest.mark.parametrize("argv,expect", [
    (["torchrun", "--master_port", "29500", "t.py"], ["torchrun", "--master_port", "4242", "t.py"]),
    (["torchrun", "--master-port=29500", "t.py"], ["torchrun", "--master-port=4242", "t.py"]),
    (["torchrun", "--rdzv-endpoint", "node1:29400", "t.py"], ["torchrun", "--rdzv-endpoint", "node1:4242", "t.py"]),
    (["accelerate", "launch", "--main_process_port", "1", "t.py"],
     ["accelerate", "launch", "--main_process_port", "4242", "t.py"]),
    (["torchrun", "--nproc_per_node", "2", "t.py", "c.yaml"], ["torchrun", "--nproc_per_node", "2", "t.py", "c.yaml"]),
])
def test_with_port_replaces_only_the_port(argv, expect):
    assert list(with_port(argv, 4242)) == expect


def test_exit_status_follows_the_shell():
    assert exit_status(0) == 0 and exit_status(1) == 1 and exit_status(-15) == 143 and exit_status(-9) == 137


def test_newest_checkpoint_is_the_largest_step(tmp_path):
    for n in (5, 40, 100):
        (tmp_path / f"checkpoint-{n}").mkdir()
    (tmp_path / "checkpoint-999").write_text("a file, not a checkpoint")
    (tmp_path / "checkpoint-final").mkdir()
    assert newest_checkpoint(str(tmp_path)) == str(tmp_path / "checkpoint-100")
    assert newest_checkpoint(str(tmp_path / "missing")) is None


def test_resume_llamafactory_override_for_one_attempt(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("sft.yaml").write_text(LF_CONFIG.format(micro=2, accum=4, steps=3))
    argv = ["llamafactory-cli", "train", "sft.yaml"]
    assert resume_argv(argv, "sft.yaml")[0] is None  # no checkpoint yet
    for d in ("out/checkpoint-10", "out/checkpoint-20"):
        Path(d).mkdir(parents=True)
        Path(d, "trainer_state.json").write_text('{"global_step": 1}')
    Path("out/checkpoint-30").mkdir()  # half-written: no trainer_state.json yet
    said = []
    new, why = resume_argv(argv, "sft.yaml", say=said.append)
    assert "checkpoint-30" in said[0] and "trainer_state.json" in said[0]
    assert new == ("llamafactory-cli", "train", "sft.yaml", "resume_from_checkpoint=out/checkpoint-20")
    assert "sft.yaml" in Path("sft.yaml").read_text() or True
    assert "resume_from_checkpoint" not in Path("sft.yaml").read_text()  # the config is not edited
    # an output_dir override on the command line is where the checkpoints are
    Path("other/checkpoint-3").mkdir(parents=True)
    Path("other/checkpoint-3/trainer_state.json").write_text("{}")
    new, _ = resume_argv([*argv, "output_dir=other"], "sft.yaml")
    assert new[-1] == "resume_from_checkpoint=other/checkpoint-3"
    # HF Trainer flags
    new, _ = resume_argv(["torchrun", "run_clm.py", "--output_dir", "out", "--do_train"], None)
    assert new[-2:] == ("--resume_from_checkpoint", "out/checkpoint-20")
    # a config that is not last (a script's own flags follow it) takes no overrides
    new, why = resume_argv(["torchrun", "train.py", "sft.yaml", "--seed", "1"], "sft.yaml")
    assert new is None and "not the last argument" in why


def test_config_is_read_from_the_command(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("configs").mkdir()
    Path("configs/sft.yaml").write_text(LF_CONFIG.format(micro=2, accum=4, steps=3))
    assert config_of_command(["llamafactory-cli", "train", "configs/sft.yaml"]) == "configs/sft.yaml"
    assert config_of_command(["torchrun", "--nproc_per_node", "2", "train.py", "configs/sft.yaml"]) == \
        "configs/sft.yaml"
    Path("train.sh").write_text("#!/bin/bash\nFORCE_TORCHRUN=1 llamafactory-cli train configs/sft.yaml\n")
    assert config_of_command(["bash", "train.sh"]) == "configs/sft.yaml"
    assert config_of_command(["python", "-c", "pass"]) is None


def test_child_argv_repeats_the_options_without_detach():
    opts = RunOptions(("torchrun", "t.py", "c.yaml"), config="c.yaml", all_configs=True, retries=2, resume=True,
                      grace=5)
    argv = child_argv(opts, "logs/x.log")
    assert argv[1:4] == ["-m", "oomfix", "run"] and "--detach" not in argv
    assert argv[argv.index("--"):] == ["--", "torchrun", "t.py", "c.yaml"]
    assert {"--all-configs", "--resume", "--config"} <= set(argv) and "--allow-semantic-changes" not in argv


def test_terminal_that_went_away_stops_the_echo_not_the_supervisor():
    r, w = os.pipe()
    spare = os.dup(w)
    os.close(r)  # nobody reads any more: EPIPE
    term = Terminal(out_fd=w, err_fd=spare)
    term.out(b"hello\n")
    assert not term.alive
    term.say("still fine")  # no exception: the descriptors now point at /dev/null
    os.close(w)
    os.close(spare)


def test_demo_mentions_run(tmp_path):
    r = CliRunner().invoke(main, ["demo", "--dir", str(tmp_path / "demo")])
    assert r.exit_code == 0 and "oomfix run" in r.output and "oomfix runs" in r.output


# --- usage errors -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("args,msg", [
    (["run"], "Missing argument"),
    (["run", "--retries", "-1", "--", "true"], "--retries"),
    (["run", "--grace", "-3", "--", "true"], "--grace"),
    (["run", "--", "no-such-program-oomfix"], "command not found"),
    (["run", "--config", "missing.yaml", "--", "true"], "config not found"),
])
def test_usage_errors_exit_2_and_start_nothing(tmp_path, monkeypatch, args, msg):
    monkeypatch.chdir(tmp_path)
    r = subprocess.run([*OOMFIX, *args], capture_output=True, text=True, env=_env())
    assert r.returncode == 2, r.stderr
    assert msg in r.stderr and "Traceback" not in r.stderr
    assert not Path(".oomfix").exists() and not Path("logs").exists()


# --- the supervisor with plain processes (no torch) ----------------------------------------------------------------

def test_failure_without_remedy_stops_after_one_attempt(tmp_path):
    job = "import sys; print('Traceback (most recent call last):'); print('KeyError: 42'); sys.exit(3)"
    r = subprocess.run([*OOMFIX, "run", "--log", "logs/j.log", "--", sys.executable, "-c", job], cwd=tmp_path,
                       capture_output=True, text=True, env=_env(), timeout=60)
    assert r.returncode == 3, r.stderr
    assert "stopping:" in r.stderr and "KeyError" in r.stderr
    (a,) = ledger.read(tmp_path)
    assert a.exit_code == 3 and a.rule is None and a.files == () and a.log == "logs/j-attempt1.log"
    assert (tmp_path / "logs/j-attempt1.log").read_text().startswith("Traceback")
    assert r.stdout.startswith("Traceback")  # the log is echoed while the terminal lasts


def test_a_job_that_ignores_the_edit_is_not_edited_again(tmp_path):
    # the job replays a genuine torchrun OOM log (micro batch 4) whatever the config says: after the first rung,
    # the second log still shows micro batch 4, so the loop stops instead of climbing the ladder blindly
    log = ROOT / "tests" / "e2e" / "genuine_oom_micro4.log"
    (tmp_path / "sft.yaml").write_text(LF_CONFIG.format(micro=4, accum=2, steps=2))
    job = f"import sys; sys.stdout.write(open({str(log)!r}).read()); sys.exit(1)"
    r = subprocess.run([*OOMFIX, "run", "--config", "sft.yaml", "--", sys.executable, "-c", job], cwd=tmp_path,
                       capture_output=True, text=True, env=_env(), timeout=60)
    assert r.returncode == 1, r.stderr
    assert "did not pick up the last edit" in r.stderr
    first, second = ledger.read(tmp_path)
    assert first.rule == "cuda-oom-split-micro-batch" and second.rule is None
    assert "per_device_train_batch_size: 2 " in (tmp_path / "sft.yaml").read_text()  # one edit, not two


OOM_REPLAY = textwrap.dedent("""\
    # replays a genuine torchrun OOM log with the batch numbers the config has now, and fails
    import re, sys, yaml
    cfg = yaml.safe_load(open("sft.yaml"))
    text = open(sys.argv[1]).read()
    text = text.replace("batch size per device = 4", f"batch size per device = {cfg['per_device_train_batch_size']}")
    text = text.replace("Gradient Accumulation steps = 2", f"Gradient Accumulation steps = {cfg['gradient_accumulation_steps']}")
    sys.stdout.write(text)
    sys.exit(1)
    """)


def test_retries_bound_the_relaunches(tmp_path):
    (tmp_path / "sft.yaml").write_text(LF_CONFIG.format(micro=4, accum=2, steps=2))
    (tmp_path / "replay.py").write_text(OOM_REPLAY)
    log = str(ROOT / "tests" / "e2e" / "genuine_oom_micro4.log")
    r = subprocess.run([*OOMFIX, "run", "--retries", "1", "--config", "sft.yaml", "--", sys.executable, "replay.py",
                        log], cwd=tmp_path, capture_output=True, text=True, env=_env(), timeout=60)
    assert r.returncode == 1, r.stderr
    assert "no relaunch left (--retries 1)" in r.stderr
    attempts = ledger.read(tmp_path)
    assert [(a.cls, a.rule) for a in attempts] == [("cuda_oom", "cuda-oom-split-micro-batch"), ("cuda_oom", None)]
    assert "per_device_train_batch_size: 2 " in (tmp_path / "sft.yaml").read_text()  # no edit without a relaunch


def test_a_ladder_with_no_rung_left_stops_with_the_diagnosis(tmp_path):
    (tmp_path / "sft.yaml").write_text(LF_CONFIG.format(micro=1, accum=8, steps=2))
    (tmp_path / "replay.py").write_text(OOM_REPLAY)
    before = (tmp_path / "sft.yaml").read_bytes()
    log = str(ROOT / "tests" / "e2e" / "genuine_oom_micro4.log")
    r = subprocess.run([*OOMFIX, "run", "--config", "sft.yaml", "--", sys.executable, "replay.py", log], cwd=tmp_path,
                       capture_output=True, text=True, env=_env(), timeout=60)
    assert r.returncode == 1, r.stderr
    assert "class: cuda_oom" in r.stderr and "no applicable rung" in r.stderr and "--allow-semantic-changes" in r.stderr
    assert (tmp_path / "sft.yaml").read_bytes() == before
    (a,) = ledger.read(tmp_path)
    assert a.cls == "cuda_oom" and a.rule is None


def test_exit_status_of_a_signal_death_is_128_plus_the_signal(tmp_path):
    job = "import os, signal; print('going', flush=True); os.kill(os.getpid(), signal.SIGKILL)"
    r = subprocess.run([*OOMFIX, "run", "--", sys.executable, "-c", job], cwd=tmp_path, capture_output=True,
                       text=True, env=_env(), timeout=60)
    assert r.returncode == 137, r.stderr
    (a,) = ledger.read(tmp_path)
    assert a.exit_code == 137 and a.rule is None


def test_job_runs_in_its_own_session_with_stdin_from_dev_null(tmp_path):
    job = ("import os, sys; print(os.getsid(0) == os.getpid(), os.getpgid(0) == os.getpid(), "
           "os.path.realpath('/proc/self/fd/0'))")
    r = subprocess.run([*OOMFIX, "run", "--log", "logs/s.log", "--", sys.executable, "-c", job], cwd=tmp_path,
                       capture_output=True, text=True, env=_env(), timeout=60)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "logs/s-attempt1.log").read_text().split() == ["True", "True", "/dev/null"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_kills_what_ignores_sigterm_after_the_grace_period(tmp_path, sig):
    # the job starts a child in a session of its own that ignores SIGTERM (as torchrun's workers live in their own
    # sessions): SIGTERM reaches the job's group, the grace period passes, SIGKILL reaches the straggler too
    job = textwrap.dedent("""\
        import signal, subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import signal, time, os; "
                                  "signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                                  "open('child.pid', 'w').write(str(os.getpid())); time.sleep(600)"],
                                 start_new_session=True)
        print("READY", flush=True)
        time.sleep(600)
        """)
    sup = subprocess.Popen([*OOMFIX, "run", "--grace", "1.5", "--log", "logs/t.log", "--", sys.executable, "-c", job],
                           cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=_env())
    _wait_for(tmp_path / "logs/t-attempt1.log", "READY")
    _wait_for_file(tmp_path / "child.pid")
    child = int((tmp_path / "child.pid").read_text())
    t0 = time.monotonic()
    sup.send_signal(sig)
    _, err = sup.communicate(timeout=30)
    assert sup.returncode == 128 + sig, err
    assert 1.5 <= time.monotonic() - t0 < 10  # the straggler got the whole grace period, then SIGKILL
    assert "grace period is over: SIGKILL" in err
    assert not _running(child)
    (a,) = ledger.read(tmp_path)
    assert a.stopped_by == sig.name and a.rule is None


def test_detach_prints_the_pid_and_the_log_and_keeps_going(tmp_path):
    r = subprocess.run([*OOMFIX, "run", "--detach", "--log", "logs/d.log", "--", sys.executable, "-c",
                        "print('trained')"], cwd=tmp_path, capture_output=True, text=True, env=_env(), timeout=60)
    assert r.returncode == 0, r.stderr
    pid = int(r.stdout.split("pid ")[1].split()[0])
    assert "tail -F logs/d-supervisor.log" in r.stdout
    deadline = time.monotonic() + 60
    while _running(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    (a,) = ledger.read(tmp_path)
    assert a.exit_code == 0 and a.log == "logs/d-attempt1.log"
    assert "attempt 1 trained" in (tmp_path / "logs/d-supervisor.log").read_text()


# --- genuine torchrun ------------------------------------------------------------------------------------------------

def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")
    except OSError:
        return False


def _wait_for_file(path: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def _wait_for(path: Path, marker: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if path.exists() and marker in path.read_text(errors="replace"):
            return
        assert time.monotonic() < deadline, f"{marker!r} never appeared in {path}"
        time.sleep(0.05)


@pytest.fixture
def torchrun():
    pytest.importorskip("torch")
    exe = Path(sys.executable).with_name("torchrun")
    if not exe.exists():
        pytest.skip("torchrun is not installed beside this Python")
    return str(exe)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _job(torchrun: str, port: int | None = None) -> list[str]:
    return [torchrun, "--nproc_per_node", "2", "--master_port", str(port or _free_port()), str(STAND_IN), "sft.yaml"]


def test_e2e_oom_ladder_until_it_trains(torchrun, tmp_path):
    cfg = tmp_path / "sft.yaml"
    cfg.write_text(LF_CONFIG.format(micro=4, accum=2, steps=2))
    r = subprocess.run([*OOMFIX, "run", "--log", "logs/train.log", "--", *_job(torchrun)], cwd=tmp_path,
                       capture_output=True, text=True, env=_env(STAND_IN_FITS="1"), timeout=300)
    assert r.returncode == 0, r.stderr
    text = cfg.read_text()
    assert "per_device_train_batch_size: 1   # what fits on one device" in text
    assert "gradient_accumulation_steps: 8\n" in text
    assert text.replace("1   #", "4   #").replace("steps: 8\n", "steps: 2\n") == \
        LF_CONFIG.format(micro=4, accum=2, steps=2)  # every other byte as it was
    attempts = ledger.read(tmp_path)
    assert [(a.attempt, a.exit_code, a.cls, a.rule, a.files) for a in attempts] == [
        (1, 1, "cuda_oom", "cuda-oom-split-micro-batch", ("sft.yaml",)),
        (2, 1, "cuda_oom", "cuda-oom-split-micro-batch", ("sft.yaml",)),
        (3, 0, "none", None, ()),
    ]
    logs = [(tmp_path / a.log).read_text() for a in attempts]
    assert "batch size per device = 4" in logs[0] and "torch.OutOfMemoryError: CUDA out of memory" in logs[0]
    assert "batch size per device = 2" in logs[1]
    assert "batch size per device = 1" in logs[2] and "'train_loss'" in logs[2]
    for log, global_batch in zip(logs, (16, 16, 16)):
        assert f"(w. parallel, distributed & accumulation) = {global_batch}" in log
    assert "global batch 16 -> 16 (world size 2)" in r.stderr
    # the journal has both applies: `oomfix undo` takes back the last one
    u = subprocess.run([*OOMFIX, "undo"], cwd=tmp_path, capture_output=True, text=True, env=_env())
    assert u.returncode == 0 and "per_device_train_batch_size: 2 " in cfg.read_text()


def test_e2e_python_exception_stops_without_an_edit(torchrun, tmp_path):
    cfg = tmp_path / "sft.yaml"
    cfg.write_text(LF_CONFIG.format(micro=4, accum=2, steps=2))
    before = cfg.read_bytes()
    r = subprocess.run([*OOMFIX, "run", "--", *_job(torchrun)], cwd=tmp_path, capture_output=True, text=True,
                       env=_env(STAND_IN_MODE="value_error", STAND_IN_FITS="1"), timeout=300)
    assert r.returncode != 0
    assert "class: python_exception" in r.stderr and "ValueError: Please specify dataset for training." in r.stderr
    assert cfg.read_bytes() == before
    (a,) = ledger.read(tmp_path)
    assert a.cls == "python_exception" and a.rule is None and a.files == () and a.exit_code == r.returncode


def test_e2e_terminal_hangup_does_not_reach_the_job(torchrun, tmp_path):
    import fcntl
    import pty
    import termios

    (tmp_path / "sft.yaml").write_text(LF_CONFIG.format(micro=1, accum=2, steps=4))
    master, slave = pty.openpty()

    def controlling_tty() -> None:  # a login shell's session: the pty is the supervisor's controlling terminal
        os.setsid()
        fcntl.ioctl(slave, termios.TIOCSCTTY, 0)

    sup = subprocess.Popen([*OOMFIX, "run", "--log", "logs/h.log", "--", *_job(torchrun)], cwd=tmp_path,
                           stdin=slave, stdout=slave, stderr=slave, preexec_fn=controlling_tty,
                           env=_env(STAND_IN_SLEEP="0.5"))
    os.close(slave)
    stop = threading.Event()
    seen = bytearray()

    def drain() -> None:  # the terminal's reader, until it goes away
        while not stop.is_set():
            if select.select([master], [], [], 0.05)[0]:
                try:
                    seen.extend(os.read(master, 65536))
                except OSError:
                    return

    reader = threading.Thread(target=drain)
    reader.start()
    _wait_for(tmp_path / "logs/h-attempt1.log", "READY")
    os.killpg(sup.pid, signal.SIGHUP)  # what the closing terminal sends to its session's process group
    stop.set()
    reader.join()
    os.close(master)  # and the terminal is gone: writes to it fail with EIO from now on
    assert sup.wait(timeout=120) == 0
    assert b"oomfix run: attempt 1:" in seen
    (a,) = ledger.read(tmp_path)
    assert a.exit_code == 0 and a.stopped_by is None
    assert "'train_loss'" in (tmp_path / a.log).read_text()


def test_e2e_sigterm_stops_the_job_within_the_grace_period(torchrun, tmp_path):
    (tmp_path / "sft.yaml").write_text(LF_CONFIG.format(micro=1, accum=2, steps=200))
    (tmp_path / "pids").mkdir()
    sup = subprocess.Popen([*OOMFIX, "run", "--grace", "10", "--log", "logs/t.log", "--", *_job(torchrun)],
                           cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                           env=_env(STAND_IN_SLEEP="0.2", STAND_IN_PIDS=str(tmp_path / "pids")))
    _wait_for(tmp_path / "logs/t-attempt1.log", "READY")
    workers = [int((tmp_path / "pids" / f"rank{r}.pid").read_text()) for r in (0, 1)]
    assert all(_running(p) for p in workers)
    t0 = time.monotonic()
    sup.send_signal(signal.SIGTERM)
    _, err = sup.communicate(timeout=60)
    assert sup.returncode == 143, err
    assert time.monotonic() - t0 < 10 + 5
    assert not any(_running(p) for p in workers)
    (a,) = ledger.read(tmp_path)  # no retry
    assert a.stopped_by == "SIGTERM" and a.rule is None


def test_e2e_busy_master_port_relaunches_on_a_free_one(torchrun, tmp_path):
    (tmp_path / "sft.yaml").write_text(LF_CONFIG.format(micro=1, accum=2, steps=2))
    with socket.socket() as busy:
        busy.bind(("0.0.0.0", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        r = subprocess.run([*OOMFIX, "run", "--", *_job(torchrun, port)], cwd=tmp_path, capture_output=True,
                           text=True, env=_env(), timeout=300)
    assert r.returncode == 0, r.stderr
    first, second = ledger.read(tmp_path)
    assert (first.cls, first.rule, first.files) == ("port_in_use", "port-in-use-free-master-port", ())
    new = int(second.command.split("MASTER_PORT=")[1].split()[0])
    assert new != port and f"--master_port {new} " in second.command and second.exit_code == 0


def test_e2e_resume_from_the_newest_checkpoint_for_that_attempt_only(torchrun, tmp_path):
    cfg = tmp_path / "sft.yaml"
    cfg.write_text(LF_CONFIG.format(micro=2, accum=1, steps=3) + "save_steps: 1\n")
    r = subprocess.run([*OOMFIX, "run", "--resume", "--", *_job(torchrun)], cwd=tmp_path, capture_output=True,
                       text=True, env=_env(STAND_IN_FITS="1", STAND_IN_OOM_STEP="2"), timeout=300)
    assert r.returncode == 0, r.stderr
    first, second = ledger.read(tmp_path)
    assert first.cls == "cuda_oom" and "resume_from_checkpoint" not in first.command
    assert second.command.endswith("sft.yaml resume_from_checkpoint=out/checkpoint-1")
    assert "Continuing training from global step 1" in (tmp_path / second.log).read_text()
    assert "resume_from_checkpoint" not in cfg.read_text()


def test_pick_up_check_compares_only_the_keys_the_rung_changed():
    from oomfix.supervise import changed_keys, not_picked_up

    split = changed_keys({"micro_batch": 2, "grad_accum": 8}, {"micro_batch": 1, "grad_accum": 16})
    assert not_picked_up(split, {"micro_batch": 2, "grad_accum": 8}) == {"micro_batch": 2, "grad_accum": 8}
    assert not_picked_up(split, {"micro_batch": 1, "grad_accum": 16}) == {}
    # a rung the log cannot show (ZeRO-3, gradient checkpointing): the unchanged batch numbers prove nothing
    zero3 = changed_keys({"micro_batch": 1, "zero_config": "ds_z2_config.json"},
                         {"micro_batch": 1, "zero_config": "ds_z3_config.json"})
    assert not_picked_up(zero3, {"micro_batch": 1, "grad_accum": 16}) == {}
    gc = changed_keys({"grad_checkpointing": False}, {"grad_checkpointing": True})
    assert not_picked_up(gc, {"micro_batch": 1, "grad_accum": 16}) == {}


@pytest.mark.slow
def test_e2e_climbs_split_then_gradient_checkpointing_then_zero3_and_trains(torchrun, tmp_path):
    # issue 21: the stand-in OOMs at micro batch 1 until gradient checkpointing AND ZeRO-3 are on (STAND_IN_FITS=0.3:
    # micro 2 costs 2, micro 1 costs 1, with checkpointing 0.5, with ZeRO-3 too 0.25)
    cfg = tmp_path / "sft.yaml"
    cfg.write_text(LF_CONFIG.format(micro=2, accum=8, steps=1)
                   + "disable_gradient_checkpointing: true\ndeepspeed: ds_z2_config.json\n")
    (tmp_path / "ds_z2_config.json").write_text('{"zero_optimization": {"stage": 2}, '
                                                '"train_micro_batch_size_per_gpu": "auto"}\n')
    (tmp_path / "ds_z3_config.json").write_text('{"zero_optimization": {"stage": 3}, '
                                                '"train_micro_batch_size_per_gpu": "auto"}\n')
    r = subprocess.run([*OOMFIX, "run", "--log", "logs/climb.log", "--", *_job(torchrun)], cwd=tmp_path,
                       capture_output=True, text=True, env=_env(STAND_IN_FITS="0.3"), timeout=600)
    assert r.returncode == 0, r.stderr
    attempts = ledger.read(tmp_path)
    assert [(a.exit_code, a.cls, a.rule) for a in attempts] == [
        (1, "cuda_oom", "cuda-oom-split-micro-batch"),
        (1, "cuda_oom", "cuda-oom-gradient-checkpointing"),
        (1, "cuda_oom", "cuda-oom-zero3"),
        (0, "none", None),
    ]
    text = cfg.read_text()
    assert "per_device_train_batch_size: 1 " in text and "gradient_accumulation_steps: 16\n" in text
    assert "disable_gradient_checkpointing: false\n" in text and "deepspeed: ds_z3_config.json\n" in text
    assert "'train_loss'" in (tmp_path / attempts[-1].log).read_text()


# --- issue 20: one attempt per process, the verdict for a scheduler, the ledger across requeues -------------------

def _once(tmp_path, *args, env=None, timeout=120):
    return subprocess.run([*OOMFIX, "run", "--once", *args], cwd=tmp_path, capture_output=True, text=True,
                          env=env or _env(), timeout=timeout)


def test_once_requeue_two_processes_continue_one_run(tmp_path):
    # a requeue simulated: each `run --once` is a new process (a new node); the ledger carries attempts 1..N
    (tmp_path / "sft.yaml").write_text(LF_CONFIG.format(micro=4, accum=2, steps=2))
    (tmp_path / "replay.py").write_text(OOM_REPLAY)
    job = ["--run-id", "job-77", "--config", "sft.yaml", "--log", "logs/r.log", "--", sys.executable, "replay.py",
           str(ROOT / "tests" / "e2e" / "genuine_oom_micro4.log")]
    codes = [_once(tmp_path, *job).returncode for _ in range(3)]
    assert codes == [138, 138, 4]
    events = ledger.read_events(tmp_path)
    assert [(type(e).__name__, e.attempt) for e in events] == [
        ("Started", 1), ("Attempt", 1), ("Started", 2), ("Attempt", 2), ("Started", 3), ("Attempt", 3)]
    attempts = ledger.read(tmp_path)
    assert [(a.run, a.attempt, a.verdict, a.rule) for a in attempts] == [
        ("job-77", 1, "fixed", "cuda-oom-split-micro-batch"), ("job-77", 2, "fixed", "cuda-oom-split-micro-batch"),
        ("job-77", 3, "no-rung", None)]
    assert [a.log for a in attempts] == ["logs/r-attempt1.log", "logs/r-attempt2.log", "logs/r-attempt3.log"]
    assert "per_device_train_batch_size: 1 " in (tmp_path / "sft.yaml").read_text()
    r = subprocess.run([*OOMFIX, "runs"], cwd=tmp_path, capture_output=True, text=True, env=_env())
    assert "run 1: 3 attempts" in r.stdout and "[no-rung]" in r.stdout


def test_once_verdicts_trained_permanent_and_retries_spent(tmp_path):
    assert _once(tmp_path, "--run-id", "a", "--", sys.executable, "-c", "print('ok')").returncode == 0
    bug = "import sys; print('Traceback (most recent call last):'); print('KeyError: 42'); sys.exit(1)"
    r = _once(tmp_path, "--run-id", "b", "--", sys.executable, "-c", bug)
    assert r.returncode == 3 and "verdict: permanent (exit 3)" in r.stderr
    (tmp_path / "sft.yaml").write_text(LF_CONFIG.format(micro=8, accum=1, steps=2))
    (tmp_path / "replay.py").write_text(OOM_REPLAY)
    job = ["--run-id", "c", "--retries", "0", "--config", "sft.yaml", "--", sys.executable, "replay.py",
           str(ROOT / "tests" / "e2e" / "genuine_oom_micro4.log")]
    r = _once(tmp_path, *job)
    assert r.returncode == 4 and "no relaunch left (--retries 0)" in r.stderr
    assert [a.verdict for a in ledger.read(tmp_path)] == ["trained", "permanent", "no-rung"]


PORT_JOB = textwrap.dedent("""\
    import os, sys
    if os.environ.get("MASTER_PORT"):
        print("MASTER_PORT", os.environ["MASTER_PORT"]); sys.exit(0)
    sys.stdout.write(open(sys.argv[1]).read()); sys.exit(1)
    """)


def test_once_port_in_use_the_next_process_gets_the_free_port(tmp_path):
    log = SHARED_LOGS / "072_port_in_use.log"
    shared_or_skip(log)
    (tmp_path / "job.py").write_text(PORT_JOB)
    job = ["--run-id", "p", "--", sys.executable, "job.py", str(log)]
    first = _once(tmp_path, *job)
    assert first.returncode == 138, first.stderr
    (a,) = ledger.read(tmp_path)
    port = a.next_env["MASTER_PORT"]
    assert a.rule == "port-in-use-free-master-port" and a.next_env["PET_MASTER_PORT"] == port
    second = _once(tmp_path, *job)
    assert second.returncode == 0, second.stderr
    b = ledger.read(tmp_path)[1]
    assert b.attempt == 2 and b.command.startswith(f"MASTER_PORT={port} ")
    assert f"MASTER_PORT {port}" in (tmp_path / b.log).read_text()


NCCL_JOB = textwrap.dedent("""\
    # replays a real NCCL watchdog timeout; with the Flight Recorder on, the ranks leave (genuine gloo) dumps first
    import os, shutil, sys
    prefix = os.environ.get("TORCH_NCCL_DEBUG_INFO_TEMP_FILE")
    if os.environ.get("TORCH_NCCL_DUMP_ON_TIMEOUT") == "1" and prefix:
        for r in (0, 1):
            shutil.copy(os.path.join(sys.argv[2], f"nccl_trace_rank_{r}"), prefix + str(r))
    sys.stdout.write(open(sys.argv[1]).read())
    sys.exit(1)
    """)


def test_once_nccl_timeout_relaunches_with_the_flight_recorder_then_reads_its_dumps(tmp_path):
    log = SHARED_LOGS / "058_nccl_timeout.log"
    shared_or_skip(log)
    (tmp_path / "job.py").write_text(NCCL_JOB)
    job = ["--run-id", "n", "--log", "logs/n.log", "--", sys.executable, "job.py", str(log),
           str(ROOT / "fixtures" / "flight_recorder" / "gloo_desync")]
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    first = _once(tmp_path, *job)
    assert first.returncode == 138, first.stderr
    (a,) = ledger.read(tmp_path)
    assert a.cls == "nccl_timeout" and a.rule == "nccl-timeout-flight-recorder" and a.files == ()
    assert a.next_env["TORCH_NCCL_DUMP_ON_TIMEOUT"] == "1" and a.next_env["TORCH_NCCL_TRACE_BUFFER_SIZE"] == "2000"
    second = _once(tmp_path, *job)
    assert second.returncode == 3, second.stderr
    b = ledger.read(tmp_path)[1]
    assert b.command.count("TORCH_NCCL_DEBUG_INFO_TEMP_FILE=") == 1
    assert b.command.split("TORCH_NCCL_DEBUG_INFO_TEMP_FILE=")[1].split()[0].endswith(
        "logs/n-attempt2.fr/nccl_trace_rank_")
    assert "collective #4 (gloo:all_reduce) was entered by rank 0; rank 1 did not enter it" in second.stderr
    assert b.verdict == "permanent"
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.name in before} == before  # no config edit
    r = subprocess.run([*OOMFIX, "diagnose", b.log], cwd=tmp_path, capture_output=True, text=True, env=_env())
    assert "rank 1 did not enter it" in r.stdout


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1], ids=["SIGTERM", "SIGUSR1"])
def test_once_a_stop_from_outside_is_retryable(tmp_path, sig):
    job = "import time; print('READY', flush=True); time.sleep(600)"
    sup = subprocess.Popen([*OOMFIX, "run", "--once", "--grace", "2", "--log", "logs/o.log", "--", sys.executable,
                            "-c", job], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                           env=_env())
    _wait_for(tmp_path / "logs/o-attempt1.log", "READY")
    sup.send_signal(sig)
    _, err = sup.communicate(timeout=60)
    assert sup.returncode == 143, err
    (a,) = ledger.read(tmp_path)
    assert a.verdict == "outside" and a.stopped_by == sig.name


def test_same_run_attempts_wait_for_each_other(tmp_path):
    job = "import time; print('READY', flush=True); time.sleep(1.5)"
    first = subprocess.Popen([*OOMFIX, "run", "--once", "--run-id", "w", "--log", "logs/w.log", "--",
                              sys.executable, "-c", job], cwd=tmp_path, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True, env=_env())
    _wait_for(tmp_path / "logs/w-attempt1.log", "READY")
    second = _once(tmp_path, "--run-id", "w", "--log", "logs/w.log", "--", sys.executable, "-c", "print(2)")
    assert first.wait(timeout=60) == 0 and second.returncode == 0
    assert "another attempt of run w is in progress" in second.stderr
    events = ledger.read_events(tmp_path)
    assert [(type(e).__name__, e.attempt) for e in events] == [
        ("Started", 1), ("Attempt", 1), ("Started", 2), ("Attempt", 2)]


def _no_scheduler_env() -> dict[str, str]:
    env = _env()
    for k in ("OOMFIX_RUN_ID", "SLURM_JOB_ID", "SKYPILOT_TASK_ID"):
        env.pop(k, None)
    return env


def test_once_a_job_killed_by_sigterm_is_outside(tmp_path):
    # the job itself got SIGTERM (a scheduler's, a person's), not the supervisor: its log is empty
    kill = "import os, signal; os.kill(os.getpid(), signal.SIGTERM)"
    r = _once(tmp_path, "--run-id", "r2", "--", sys.executable, "-c", kill)
    assert r.returncode == 143, r.stderr
    assert "killed by SIGTERM" in r.stderr and "verdict: outside (exit 143)" in r.stderr
    (a,) = ledger.read(tmp_path)
    assert (a.exit_code, a.cls, a.verdict, a.rule) == (143, "none", "outside", None)


def test_once_a_bare_sigkill_is_outside_once_then_permanent(tmp_path):
    kill = "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"
    codes = [_once(tmp_path, "--run-id", "k", "--", sys.executable, "-c", kill).returncode for _ in range(2)]
    assert codes == [143, 3]
    assert [(a.exit_code, a.verdict) for a in ledger.read(tmp_path)] == [(137, "outside"), (137, "permanent")]


def test_once_unrelated_commands_are_runs_of_their_own_outside_a_scheduler(tmp_path):
    env = _no_scheduler_env()
    fail = "import sys; sys.exit(1)"
    for job in ("print('a')", fail, "print('c')"):
        _once(tmp_path, "--", sys.executable, "-c", job, env=env)
    attempts = ledger.read(tmp_path)
    assert [a.attempt for a in attempts] == [1, 1, 1]
    assert len({a.run for a in attempts}) == 3 and all(a.run.startswith("cmd-") for a in attempts)
    # the same failing command again continues its run (a relaunch); the same command after it trained is a new run
    _once(tmp_path, "--", sys.executable, "-c", fail, env=env)
    r = _once(tmp_path, "--", sys.executable, "-c", "print('a')", env=env)
    assert r.returncode == 0 and "a new run starts under the same id at attempt 2" in r.stderr
    attempts = ledger.read(tmp_path)
    assert [(a.attempt, a.verdict) for a in attempts if a.run == attempts[1].run] == [(1, "permanent"),
                                                                                       (2, "permanent")]
    out = subprocess.run([*OOMFIX, "runs"], cwd=tmp_path, capture_output=True, text=True, env=env).stdout
    assert out.count("\nrun ") + out.startswith("run ") == 4, out  # a, the failing one (2 attempts), c, a again
    assert "1 attempt, trained" in out and "2 attempts, failed" in out


def test_verdict_of_a_log_dry_run_then_write_and_a_second_log_of_the_same_oom(tmp_path):
    cfg = tmp_path / "sft.yaml"
    cfg.write_text(LF_CONFIG.format(micro=4, accum=2, steps=2))
    src = (ROOT / "tests" / "e2e" / "genuine_oom_micro4.log").read_text()
    (tmp_path / "node0.log").write_text(src)
    (tmp_path / "node1.log").write_text(src)  # the other node's log of the same OOM, written before the fix
    old = time.time() - 60
    for n in ("node0.log", "node1.log"):
        os.utime(tmp_path / n, (old, old))
    before = cfg.read_bytes()
    v = subprocess.run([*OOMFIX, "verdict", "node0.log", "--config", "sft.yaml"], cwd=tmp_path,
                       capture_output=True, text=True, env=_env())
    assert v.returncode == 138 and "verdict: fixed" in v.stdout and cfg.read_bytes() == before  # a dry run
    w = subprocess.run([*OOMFIX, "verdict", "node0.log", "--config", "sft.yaml", "--write", "--run-id", "n0",
                        "--format", "json"], cwd=tmp_path, capture_output=True, text=True, env=_env())
    assert w.returncode == 138, w.stderr
    out = json.loads(w.stdout)
    assert out["written"] and out["rule"] == "cuda-oom-split-micro-batch" and out["verdict"] == "fixed"
    assert "per_device_train_batch_size: 2 " in cfg.read_text()
    # the second node's log of that OOM: the same failure seen twice applies one rung
    s = subprocess.run([*OOMFIX, "verdict", "node1.log", "--config", "sft.yaml", "--write", "--run-id", "n1"],
                       cwd=tmp_path, capture_output=True, text=True, env=_env())
    assert s.returncode == 138, s.stderr
    assert "the same failure, seen again" in s.stdout
    assert "per_device_train_batch_size: 2 " in cfg.read_text()


def test_verdict_of_outside_stops_and_bad_input(tmp_path):
    log = tmp_path / "hup.log"
    log.write_text("[2026-01-01 00:00:00,000] torch.distributed.elastic.agent.server.api: [WARNING] Received "
                   "Signals.SIGHUP death signal, shutting down workers\n")
    r = subprocess.run([*OOMFIX, "verdict", str(log)], capture_output=True, text=True, env=_env())
    assert r.returncode in (143, 3), r.stdout  # sighup when recognised: 143; never a fix
    assert "verdict: fixed" not in r.stdout
    r = subprocess.run([*OOMFIX, "verdict", str(tmp_path / "missing.log")], capture_output=True, text=True,
                       env=_env())
    assert r.returncode == 2 and "Traceback" not in r.stderr


# --- issue 23: a killed supervisor, a stalled reader --------------------------------------------------------------

def test_a_sigkilled_supervisor_takes_the_job_with_it_and_leaves_a_started_record(tmp_path):
    job = "import os, time; open('job.pid', 'w').write(str(os.getpid())); print('READY', flush=True); time.sleep(600)"
    sup = subprocess.Popen([*OOMFIX, "run", "--log", "logs/k.log", "--", sys.executable, "-c", job], cwd=tmp_path,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env())
    _wait_for(tmp_path / "logs/k-attempt1.log", "READY")
    pid = int((tmp_path / "job.pid").read_text())
    sup.kill()
    sup.wait(timeout=30)
    deadline = time.monotonic() + 10
    while _running(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _running(pid)
    assert ledger.read(tmp_path) == []
    (s,) = ledger.read_events(tmp_path)
    assert isinstance(s, ledger.Started) and s.log == "logs/k-attempt1.log" and s.pid == sup.pid
    r = subprocess.run([*OOMFIX, "runs"], cwd=tmp_path, capture_output=True, text=True, env=_env())
    assert r.returncode == 0 and "started, no end recorded" in r.stdout


def test_a_stalled_stdout_reader_does_not_block_sigterm(tmp_path):
    # the supervisor's stdout is a pipe nobody reads (a stuck pager, a full ssh channel): the job floods it
    job = "import time\nfor i in range(50000): print('y' * 99)\nprint('READY', flush=True)\ntime.sleep(600)"
    sup = subprocess.Popen([*OOMFIX, "run", "--grace", "1", "--log", "logs/p.log", "--", sys.executable, "-c", job],
                           cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=_env())
    try:
        _wait_for(tmp_path / "logs/p-attempt1.log", "READY")
        time.sleep(0.5)
        t0 = time.monotonic()
        sup.send_signal(signal.SIGTERM)
        assert sup.wait(timeout=30) == 143
        assert time.monotonic() - t0 < 15
    finally:
        if sup.poll() is None:
            sup.kill()
        sup.stdout.close()
    (a,) = ledger.read(tmp_path)
    assert a.stopped_by == "SIGTERM"


# --- issue 21 item 2: a script that starts several jobs; one job with its own log ------------------------------------

def test_a_script_starting_two_background_jobs_is_refused(tmp_path):
    (tmp_path / "configs").mkdir()
    for n in ("a", "b"):
        (tmp_path / "configs" / f"{n}.yaml").write_text(LF_CONFIG.format(micro=2, accum=8, steps=2))
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "train.sh").write_text(textwrap.dedent("""\
        #!/bin/bash
        torchrun --nproc_per_node 2 --master_port 29501 train.py configs/a.yaml > logs/a.log 2>&1 &
        torchrun --nproc_per_node 2 --master_port 29502 train.py configs/b.yaml > logs/b.log 2>&1 &
        wait
        """))
    r = subprocess.run([*OOMFIX, "run", "--all-configs", "--", "bash", "scripts/train.sh"], cwd=tmp_path,
                       capture_output=True, text=True, env=_env(), timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "starts 2 training jobs" in r.stderr and "logs/a.log" in r.stderr
    assert "once per job" in r.stderr
    assert not (tmp_path / ".oomfix").exists() and not (tmp_path / "logs").exists()


@pytest.mark.parametrize("log_name", ["logs/job.log", "logs/job_$(date +%Y%m%d_%H%M%S).log"])
def test_a_script_that_waits_for_its_job_is_judged_by_the_jobs_own_log(tmp_path, log_name):
    # a stand-in `torchrun` on PATH (the launcher reader knows jobs by their program) that fails with a Python error;
    # the script backgrounds it with its own log and `wait`s, so the script itself exits 0
    (tmp_path / "logs").mkdir()
    (tmp_path / "bin").mkdir()
    fake = tmp_path / "bin" / "torchrun"
    fake.write_text(f"#!{sys.executable}\nimport sys\nprint('Traceback (most recent call last):')\n"
                    "print('KeyError: 42')\nsys.exit(1)\n")
    fake.chmod(0o755)
    (tmp_path / "sft.yaml").write_text(LF_CONFIG.format(micro=2, accum=8, steps=2))
    (tmp_path / "logs" / "job_20200101_000000.log").write_text("an older run's log\n")
    os.utime(tmp_path / "logs" / "job_20200101_000000.log", (1.6e9, 1.6e9))
    (tmp_path / "train.sh").write_text(f"#!/bin/bash\ntorchrun --nproc_per_node 2 train.py sft.yaml > {log_name} 2>&1 &"
                                       "\nwait\n")
    env = _env()
    env["PATH"] = str(tmp_path / "bin") + os.pathsep + env["PATH"]
    r = subprocess.run([*OOMFIX, "run", "--", "bash", "train.sh"], cwd=tmp_path, capture_output=True, text=True,
                       env=env, timeout=60)
    assert r.returncode == 1, r.stderr
    assert "CMD exited 0, but the job's own log logs/job" in r.stderr and "shows python_exception" in r.stderr
    assert "job_20200101_000000.log" not in r.stderr
    (a,) = ledger.read(tmp_path)
    assert a.cls == "python_exception" and a.exit_code == 1


@pytest.mark.slow
def test_e2e_sigkill_of_the_supervisor_stops_torchrun_and_its_workers(torchrun, tmp_path):
    (tmp_path / "sft.yaml").write_text(LF_CONFIG.format(micro=1, accum=2, steps=200))
    (tmp_path / "pids").mkdir()
    sup = subprocess.Popen([*OOMFIX, "run", "--log", "logs/k.log", "--", *_job(torchrun)], cwd=tmp_path,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           env=_env(STAND_IN_SLEEP="0.2", STAND_IN_PIDS=str(tmp_path / "pids")))
    _wait_for(tmp_path / "logs/k-attempt1.log", "READY")
    workers = [int((tmp_path / "pids" / f"rank{r}.pid").read_text()) for r in (0, 1)]
    sup.kill()
    sup.wait(timeout=30)
    deadline = time.monotonic() + 60
    while any(_running(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_running(p) for p in workers)
    (s,) = ledger.read_events(tmp_path)
    assert isinstance(s, ledger.Started)


def test_once_a_job_that_ignores_the_edit_is_caught_by_the_next_process(tmp_path):
    # the pick-up check across a requeue: attempt 2 (a new process) still shows the batch attempt 1's rung changed
    log = ROOT / "tests" / "e2e" / "genuine_oom_micro4.log"
    (tmp_path / "sft.yaml").write_text(LF_CONFIG.format(micro=4, accum=2, steps=2))
    job = ["--run-id", "i", "--config", "sft.yaml", "--", sys.executable, "-c",
           f"import sys; sys.stdout.write(open({str(log)!r}).read()); sys.exit(1)"]
    assert _once(tmp_path, *job).returncode == 138
    (a,) = ledger.read(tmp_path)
    assert dict(a.changed) == {"micro_batch": (4, 2), "grad_accum": (2, 4)}
    r = _once(tmp_path, *job)
    assert r.returncode == 3 and "did not pick up the last edit" in r.stderr
    assert "per_device_train_batch_size: 2 " in (tmp_path / "sft.yaml").read_text()


@pytest.mark.parametrize("script,refused", [
    ("torchrun --nproc_per_node 2 t.py a.yaml > logs/a.log 2>&1 &\ntorchrun --nproc_per_node 2 t.py b.yaml &\nwait\n",
     True),
    ("for c in a b; do\n  torchrun --nproc_per_node 2 t.py $c.yaml > logs/$c.log 2>&1 &\ndone\nwait\n", True),
    ('if [ "$1" = a ]; then\n  torchrun t.py a.yaml > logs/a.log\nelse\n  torchrun t.py b.yaml > logs/b.log\nfi\n',
     False),
    ("torchrun --nproc_per_node 2 t.py a.yaml > logs/a.log 2>&1\n", False),
])
def test_which_scripts_one_supervisor_cannot_supervise(tmp_path, script, refused):
    from oomfix.supervise import command_jobs, jobs_problem

    p = tmp_path / "train.sh"
    p.write_text("#!/bin/bash\n" + script)
    name, jobs = command_jobs(["bash", str(p)], str(tmp_path))
    assert (jobs_problem(name, jobs) is not None) == refused


@pytest.mark.slow
def test_e2e_a_scheduler_loop_of_run_once_climbs_to_zero3_and_trains(torchrun, tmp_path):
    # a scheduler (SLURM --requeue, a Kubernetes Job) as a loop: relaunch while the verdict is retryable
    cfg = tmp_path / "sft.yaml"
    cfg.write_text(LF_CONFIG.format(micro=2, accum=8, steps=1)
                   + "disable_gradient_checkpointing: true\ndeepspeed: ds_z2_config.json\n")
    for stage in (2, 3):
        (tmp_path / f"ds_z{stage}_config.json").write_text(f'{{"zero_optimization": {{"stage": {stage}}}}}\n')
    codes = []
    for _ in range(6):
        r = subprocess.run([*OOMFIX, "run", "--once", "--log", "logs/s.log", "--", *_job(torchrun)], cwd=tmp_path,
                           capture_output=True, text=True, env=_env(STAND_IN_FITS="0.3", SLURM_JOB_ID="991"),
                           timeout=300)
        codes.append(r.returncode)
        if r.returncode not in (138, 143):
            break
    assert codes == [138, 138, 138, 0], r.stderr
    attempts = ledger.read(tmp_path)
    assert [(a.run, a.attempt, a.rule, a.verdict) for a in attempts] == [
        ("991", 1, "cuda-oom-split-micro-batch", "fixed"), ("991", 2, "cuda-oom-gradient-checkpointing", "fixed"),
        ("991", 3, "cuda-oom-zero3", "fixed"), ("991", 4, None, "trained")]


def test_run_loop_relaunches_an_nccl_timeout_once_with_the_flight_recorder(tmp_path):
    log = SHARED_LOGS / "058_nccl_timeout.log"
    shared_or_skip(log)
    (tmp_path / "job.py").write_text(NCCL_JOB)
    r = subprocess.run([*OOMFIX, "run", "--log", "logs/l.log", "--", sys.executable, "job.py", str(log),
                        str(ROOT / "fixtures" / "flight_recorder" / "gloo_desync")], cwd=tmp_path,
                       capture_output=True, text=True, env=_env(), timeout=120)
    assert r.returncode == 1, r.stderr
    first, second = ledger.read(tmp_path)
    assert first.rule == "nccl-timeout-flight-recorder" and "TORCH_NCCL_DUMP_ON_TIMEOUT" not in first.command
    assert "TORCH_NCCL_DUMP_ON_TIMEOUT=1" in second.command and second.verdict == "permanent"
    assert (tmp_path / "logs" / "l-attempt2.fr" / "nccl_trace_rank_1").exists()
    assert "rank 1 did not enter it (its last was #3)" in r.stderr


def test_terminal_drops_the_echo_instead_of_blocking_on_a_full_pipe():
    r, w = os.pipe()
    os.set_blocking(w, True)
    term = Terminal(out_fd=w, err_fd=w)
    t0 = time.monotonic()
    term.out(b"x" * (4 << 20))  # far more than a pipe holds, and nobody reads
    assert time.monotonic() - t0 < 5 and term.alive and term.dropped > 0
    os.close(r)
    os.close(w)


def test_the_genuine_origin_launcher_is_refused_with_its_two_jobs(tmp_path):
    # ../shared/corpus/genuine_lf/project/start.sh: two `nohup python wrapper.py ... > logs/... &` jobs
    project = SHARED / "corpus" / "genuine_lf" / "project"
    shared_or_skip(project / "start.sh")
    r = subprocess.run([*OOMFIX, "run", "--all-configs", "--", "bash", str(project / "start.sh")], cwd=tmp_path,
                       capture_output=True, text=True, env=_env(), timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "starts 2 training jobs" in r.stderr and "qwen3_lora_sft_a.yaml" in r.stderr and "once per job" in r.stderr
    assert not (tmp_path / ".oomfix").exists()
