"""The user's own project, laid out the way their team had it (issue 10): a launcher full of shell variables, run
from the repository root as `bash model/training/start_finetune.sh`, a Python wrapper that builds the torchrun
command, timestamped logs. `check` and `apply` end to end, from the repository root and from model/training, and
the same tree committed to git and cloned fresh."""
import json
import os
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from oomfix.cli import main

LAUNCHER = """\
#!/bin/bash
# run from the repository root: bash model/training/start_finetune.sh
TRAIN_SCRIPT=model/training/train_qwen3_ft.py
CONFIG_A=model/training/configs/qwen3_14b_a.yaml
CONFIG_B=model/training/configs/qwen3_14b_b.yaml
LOG_DIR=model/training/logs
TS=$(date +%Y%m%d_%H%M%S)
mkdir -p "$LOG_DIR"

CUDA_VISIBLE_DEVICES=0,1,2,3 nohup python "$TRAIN_SCRIPT" --config "$CONFIG_A" > "$LOG_DIR/train_gpu0123_${TS}.log" 2>&1 &
{port}CUDA_VISIBLE_DEVICES=4,5,6,7 nohup python "$TRAIN_SCRIPT" --config "$CONFIG_B" > "$LOG_DIR/train_gpu4567_${TS}.log" 2>&1 &
"""
WRAPPER = """\
import argparse
import os
import subprocess
import textwrap

p = argparse.ArgumentParser()
p.add_argument("--config", required=True)
a = p.parse_args()
n_gpus = len(os.environ["CUDA_VISIBLE_DEVICES"].split(","))
cmd = ["torchrun", "--nproc_per_node", str(n_gpus), "--master_port", os.environ.get("MASTER_PORT", "29500"),
       "src/train.py", a.config]
print("Running:", " ".join(cmd), flush=True)
subprocess.run(cmd, check=True)
"""
CONFIG = """\
### model
model_name_or_path: Qwen/Qwen3-14B
stage: sft
finetuning_type: full
deepspeed: model/training/ds/ds_z3_config.json

### train
per_device_train_batch_size: 2
gradient_accumulation_steps: 8
output_dir: saves/qwen3_14b_{x}
"""
OOM_LOG = """\
Running: torchrun --nproc_per_node 4 --master_port {port} src/train.py model/training/configs/qwen3_14b_b.yaml
[INFO|2026-11-27 10:00:00] llamafactory.hparams.parser:143 >> Process rank: 0, world size: 4, device: cuda:0
  Instantaneous batch size per device = 2
  Gradient Accumulation steps = 8
[rank2]: torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 2 has a total capacity of 79.25 GiB of which 1.06 GiB is free.
E1127 10:00:05.000000 1 torch/distributed/elastic/multiprocessing/api.py:1002] failed (exitcode: 1) local_rank: 2 (pid: 9) of binary: python
"""
SIGHUP_LOG = """\
Running: torchrun --nproc_per_node 4 --master_port 29500 src/train.py model/training/configs/qwen3_14b_a.yaml
[INFO|2026-11-27 10:00:00] llamafactory.hparams.parser:143 >> Process rank: 0, world size: 4, device: cuda:0
  Instantaneous batch size per device = 2
  Gradient Accumulation steps = 8
W1127 11:00:00.000000 1 torch/distributed/elastic/agent/server/api.py:753] Received 1 death signal, shutting down workers
"""
DS = '{"train_micro_batch_size_per_gpu": "auto", "zero_optimization": {"stage": 3}}\n'


def build(root: Path, same_port: bool) -> Path:
    files = {
        "model/training/start_finetune.sh": LAUNCHER.replace("{port}", "" if same_port else "MASTER_PORT=29501 "),
        "model/training/train_qwen3_ft.py": WRAPPER,
        "model/training/configs/qwen3_14b_a.yaml": CONFIG.format(x="a"),
        "model/training/configs/qwen3_14b_b.yaml": CONFIG.format(x="b"),
        "model/training/ds/ds_z3_config.json": DS,
        "model/training/logs/train_gpu0123_20261127_095959.log": SIGHUP_LOG,
        "model/training/logs/train_gpu4567_20261127_095959.log": OOM_LOG.format(port=29500 if same_port else 29501),
    }
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return root


def cli(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def findings(*paths):
    r = cli("check", "--format", "json", *paths)
    return r.exit_code, {(f["id"], os.path.basename(f["file"]), f["line"]) for f in json.loads(r.output)["findings"]}


LOGS = "model/training/logs"


@pytest.mark.parametrize("where", ["root", "model/training"])
def test_the_users_layout_end_to_end(tmp_path, monkeypatch, where):
    root = build(tmp_path / "repo", same_port=False)
    cwd = root if where == "root" else root / "model/training"
    monkeypatch.chdir(cwd)
    rel = "" if where == "root" else "../../"
    logs = os.path.relpath(root / LOGS)

    r = cli("jobs", f"{rel}model/training/start_finetune.sh", "--format", "json")
    jobs = json.loads(r.output)["jobs"]
    assert [(j["line"], j["launcher"], j["nohup"], j["gpus"], j["nproc"], j["master_port"]) for j in jobs] == [
        (10, "python-wrapper", True, "0,1,2,3", 4, 29500), (11, "python-wrapper", True, "4,5,6,7", 4, 29501)]
    assert jobs[0]["config"] == "model/training/configs/qwen3_14b_a.yaml"
    assert jobs[0]["log"] == "model/training/logs/train_gpu0123_${TS}.log"

    code, found = findings()
    assert code == 1
    assert ("unprotected-launch", "start_finetune.sh", 10) in found
    assert ("unprotected-launch", "start_finetune.sh", 11) in found
    assert not any(f[0] == "port-collision" for f in found)

    # the SIGHUP log: setsid on both job lines, no config touched
    r = cli("apply", f"{logs}/train_gpu0123_20261127_095959.log", "--write")
    assert r.exit_code == 0, r.output
    text = (root / "model/training/start_finetune.sh").read_text().splitlines()
    assert text[9].startswith("CUDA_VISIBLE_DEVICES=0,1,2,3 setsid nohup python")
    assert text[10].startswith("MASTER_PORT=29501 CUDA_VISIBLE_DEVICES=4,5,6,7 setsid nohup python")

    # the OOM log: both siblings, each with its own world size (4 GPUs each, from the wrapper)
    r = cli("apply", f"{logs}/train_gpu4567_20261127_095959.log", "--all-configs", "--format", "json")
    out = json.loads(r.output)
    edits = {os.path.basename(e["file"]): e for e in out["edits"]}
    assert set(edits) == {"qwen3_14b_a.yaml", "qwen3_14b_b.yaml"}, r.output
    assert all(e["world_size"] == 4 and e["global_batch_before"] == e["global_batch_after"] == 64
               for e in edits.values())
    r = cli("apply", f"{logs}/train_gpu4567_20261127_095959.log", "--all-configs", "--write")
    assert r.exit_code == 0, r.output

    code, found = findings()
    assert code == 0, found


def test_the_same_port_variant_collides(tmp_path, monkeypatch):
    root = build(tmp_path / "repo", same_port=True)
    monkeypatch.chdir(root)
    code, found = findings()
    assert code == 1
    assert {("unprotected-launch", "start_finetune.sh", 10), ("unprotected-launch", "start_finetune.sh", 11),
            ("port-collision", "start_finetune.sh", 11)} <= found


def git(cwd, *args):
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                   env={**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
                        "GIT_COMMITTER_EMAIL": "t@t"})


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_fresh_clone_decides_unchanged_from_content_not_mtimes(tmp_path, monkeypatch):
    origin = build(tmp_path / "origin", same_port=False)
    # only the OOM'd job is in this repository's story: the SIGHUP log would make the other config a finding too
    (origin / LOGS / "train_gpu0123_20261127_095959.log").unlink()
    git(origin, "init", "-q")
    git(origin, "add", "-A")
    git(origin, "commit", "-q", "-m", "the run that ran out of memory")
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(origin), str(clone))
    monkeypatch.chdir(clone)
    code, found = findings()
    assert ("unremediated-failure", "qwen3_14b_b.yaml", 8) in found and code == 1

    r = cli("apply", f"{LOGS}/train_gpu4567_20261127_095959.log", "--all-configs", "--write")
    assert r.exit_code == 0, r.output
    git(clone, "add", "-A")
    git(clone, "commit", "-q", "-m", "oomfix apply")
    clone2 = tmp_path / "clone2"
    git(tmp_path, "clone", "-q", str(clone), str(clone2))
    monkeypatch.chdir(clone2)
    code, found = findings()
    assert not any(f[0] == "unremediated-failure" for f in found), found
    journal = (clone2 / ".oomfix/journal.jsonl").read_text()
    assert str(tmp_path) not in journal  # paths relative to the journal's root: it means the same in any clone


def test_undo_still_works_with_relative_journal_paths(tmp_path, monkeypatch):
    root = build(tmp_path / "repo", same_port=False)
    monkeypatch.chdir(root)
    before = (root / "model/training/configs/qwen3_14b_b.yaml").read_bytes()
    assert cli("apply", f"{LOGS}/train_gpu4567_20261127_095959.log", "--all-configs", "--write").exit_code == 0
    assert (root / "model/training/configs/qwen3_14b_b.yaml").read_bytes() != before
    r = cli("undo")
    assert r.exit_code == 0, r.output
    assert (root / "model/training/configs/qwen3_14b_b.yaml").read_bytes() == before


def test_check_on_llamafactory_examples_exits_0():
    from conftest import SHARED, shared_or_skip

    path = SHARED / "corpus" / "configs" / "hiyouga__LLaMA-Factory"
    shared_or_skip(path)
    r = cli("check", str(path))
    assert r.exit_code == 0, r.output[-2000:]
    assert "None" not in r.output


def test_a_log_moved_elsewhere_is_matched_by_the_launch_line_it_shows(tmp_path, monkeypatch):
    root = build(tmp_path / "repo", same_port=False)
    moved = tmp_path / "elsewhere" / "hup.log"
    moved.parent.mkdir()
    moved.write_text(SIGHUP_LOG)
    monkeypatch.chdir(root)
    r = cli("apply", str(moved), "--format", "json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert [os.path.basename(e["file"]) for e in out["edits"]] == ["start_finetune.sh"]


def test_sighup_fix_goes_into_the_function_that_starts_the_job(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "logs").mkdir()
    (tmp_path / "run.sh").write_text(textwrap.dedent("""\
        train() {
            nohup llamafactory-cli train "$1" > "logs/$2.log" 2>&1
        }
        for m in a b; do
            train configs/$m.yaml $m
        done
    """))
    (tmp_path / "logs/a.log").write_text(SIGHUP_LOG)
    r = cli("apply", "logs/a.log", "--write")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "run.sh").read_text().splitlines()[1] == \
        '    setsid nohup llamafactory-cli train "$1" > "logs/$2.log" 2>&1'


PORT_LOG = """\
Running: torchrun --nproc_per_node 4 --master_port 29500 src/train.py model/training/configs/qwen3_14b_b.yaml
torch.distributed.DistNetworkError: The server socket has failed to listen on any local network address. The server \
socket has failed to bind to [::]:29500 (errno: 98 - Address already in use).
"""


def test_port_fix_uses_what_each_launcher_reads(tmp_path, monkeypatch):
    root = build(tmp_path / "repo", same_port=True)
    monkeypatch.chdir(root)
    (root / LOGS / "train_gpu4567_20261127_120000.log").write_text(PORT_LOG)
    r = cli("apply", f"{LOGS}/train_gpu4567_20261127_120000.log", "--write")
    assert r.exit_code == 0, r.output
    line = (root / "model/training/start_finetune.sh").read_text().splitlines()[10]
    assert line.startswith("CUDA_VISIBLE_DEVICES=4,5,6,7 MASTER_PORT=29501 nohup python")  # the wrapper reads it
    assert not any(f[0] == "port-collision" for f in findings()[1])
    # torchrun ignores MASTER_PORT: it gets --master_port
    (tmp_path / "t").mkdir()
    monkeypatch.chdir(tmp_path / "t")
    (tmp_path / "t/l.sh").write_text("CUDA_VISIBLE_DEVICES=0 setsid torchrun t.py > a.log 2>&1 &\n"
                                     "CUDA_VISIBLE_DEVICES=1 setsid torchrun t.py > b.log 2>&1 &\n")
    (tmp_path / "t/b.log").write_text(PORT_LOG)
    assert cli("apply", "b.log", "--write").exit_code == 0
    assert (tmp_path / "t/l.sh").read_text().splitlines()[1] == \
        "CUDA_VISIBLE_DEVICES=1 setsid torchrun --master_port 29501 t.py > b.log 2>&1 &"
