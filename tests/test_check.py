"""`oomfix check`: each finding has a trigger and a near miss; the user's story end to end."""
import json
import os
import textwrap
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from oomfix.check import discover, run_check
from oomfix.cli import main

LF = """\
### model
model_name_or_path: Qwen/Qwen3-14B
stage: sft
finetuning_type: full
{extra}
### train
per_device_train_batch_size: {micro}
gradient_accumulation_steps: {accum}
output_dir: saves/{name}
"""
WRAPPER = """\
import os, subprocess, sys
subprocess.run(["torchrun", "--nproc_per_node", "4", "--master_port", os.environ.get("MASTER_PORT", "29500"),
                "src/train.py", sys.argv[1]], check=True)
"""


def make(root: Path, files: dict):
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(text))


def ids(root, *args):
    res = run_check([str(root), *args])
    return sorted({f.id for f in res.findings}), res


@pytest.fixture
def tree(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def lf(name, micro=1, accum=16, extra=""):
    return LF.format(name=name, micro=micro, accum=accum, extra=extra)


def test_user_story_before_and_after(tree):
    make(tree, {
        "configs/a.yaml": lf("a", 2, 8),
        "configs/b.yaml": lf("b", 1, 16),
        "wrapper.py": WRAPPER,
        "launch.sh": """\
            #!/bin/bash
            export MASTER_PORT=29500
            CUDA_VISIBLE_DEVICES=0,1,2,3 nohup python wrapper.py configs/a.yaml > a.log 2>&1 &
            CUDA_VISIBLE_DEVICES=4,5,6,7 nohup python wrapper.py configs/b.yaml > b.log 2>&1 &
            wait
        """,
    })
    r = CliRunner().invoke(main, ["check", "--format", "json"])
    assert r.exit_code == 1
    found = {(f["id"], f["file"], f["line"]) for f in json.loads(r.output)["findings"]}
    assert ("sibling-drift", "configs/b.yaml", 7) in found
    assert ("unprotected-launch", "launch.sh", 3) in found and ("unprotected-launch", "launch.sh", 4) in found
    assert ("port-collision", "launch.sh", 4) in found
    make(tree, {
        "configs/a.yaml": lf("a", 1, 16),
        "launch.sh": """\
            #!/bin/bash
            CUDA_VISIBLE_DEVICES=0,1,2,3 MASTER_PORT=29500 setsid nohup python wrapper.py configs/a.yaml > a.log 2>&1 &
            CUDA_VISIBLE_DEVICES=4,5,6,7 MASTER_PORT=29501 setsid nohup python wrapper.py configs/b.yaml > b.log 2>&1 &
            wait
        """,
    })
    r = CliRunner().invoke(main, ["check"])
    assert r.exit_code == 0, r.output


def test_sibling_drift_near_miss_different_output_dirs_only(tree):
    make(tree, {"c/a.yaml": lf("a"), "c/b.yaml": lf("b")})
    assert ids(tree)[0] == []


def test_sibling_drift_ignores_explicit_default(tree):
    make(tree, {"c/a.yaml": lf("a", extra="disable_gradient_checkpointing: false"), "c/b.yaml": lf("b")})
    assert ids(tree)[0] == []


def test_different_models_are_not_siblings(tree):
    make(tree, {"c/a.yaml": lf("a", 2, 8), "c/b.yaml": lf("b").replace("Qwen3-14B", "Qwen3-8B")})
    assert ids(tree)[0] == []


LAUNCH2 = """\
    #!/bin/bash
    CUDA_VISIBLE_DEVICES={ga} setsid nohup torchrun --nproc_per_node {na} --master_port 29500 t.py c/a.yaml > a.log 2>&1 &
    CUDA_VISIBLE_DEVICES={gb} setsid nohup torchrun --nproc_per_node {nb} --master_port 29501 t.py c/b.yaml > b.log 2>&1 &
    wait
"""


def test_global_batch_mismatch_and_near_miss(tree):
    make(tree, {"c/a.yaml": lf("a", 1, 16), "c/b.yaml": lf("b", 1, 16),
                "l.sh": LAUNCH2.format(ga="0,1,2,3", na=4, gb="4,5", nb=2)})
    got, res = ids(tree)
    assert got == ["global-batch-mismatch"]
    make(tree, {"c/b.yaml": lf("b", 1, 32)})  # 2 GPUs x 1 x 32 = 4 x 1 x 16
    assert ids(tree)[0] == []


def test_deepspeed_missing_and_mismatch(tree):
    make(tree, {"c/a.yaml": lf("a", extra="deepspeed: ds/nope.json")})
    assert ids(tree)[0] == ["deepspeed-mismatch"]
    make(tree, {"c/a.yaml": lf("a", extra="deepspeed: ds/z2.json"),
                "ds/z2.json": '{"train_micro_batch_size_per_gpu": 2, "zero_optimization": {"stage": 2}}'})
    got, res = ids(tree)
    assert got == ["deepspeed-mismatch"] and "sets train_micro_batch_size_per_gpu: 2" in res.findings[0].message
    make(tree, {"ds/z2.json": '{"train_micro_batch_size_per_gpu": "auto", "zero_optimization": {"stage": 2}}'})
    assert ids(tree)[0] == []


@pytest.mark.parametrize("line,bad", [
    ("nohup torchrun t.py c/a.yaml > a.log 2>&1 &", True),
    ("torchrun t.py c/a.yaml > a.log 2>&1 &\nwait", True),  # the script waits: SIGHUP reaches its process group
    ("nohup deepspeed t.py --deepspeed ds.json > a.log &", True),
    ("setsid nohup torchrun t.py c/a.yaml > a.log 2>&1 < /dev/null &", False),
    ("nohup torchrun --signals-to-handle SIGTERM,SIGINT,SIGQUIT t.py c/a.yaml > a.log &", False),
    ("tmux new -d 'torchrun t.py c/a.yaml > a.log 2>&1'", False),
    ("torchrun t.py c/a.yaml", False),
    ("nohup python prep.py > p.log &", False),
])
def test_unprotected_launch(tree, line, bad):
    make(tree, {"l.sh": "#!/bin/bash\n" + line + "\n"})
    assert (ids(tree)[0] == ["unprotected-launch"]) is bad


def test_bare_background_without_wait_is_a_warning(tree):
    make(tree, {"l.sh": "torchrun t.py > a.log 2>&1 &\n"})
    got, res = ids(tree)
    assert got == ["unprotected-background"] and res.exit_code() == 0


@pytest.mark.parametrize("ga,gb,bad", [("0,1", "1,2", True), ("0,1", "2,3", False), (None, None, True)])
def test_gpu_overlap(tree, ga, gb, bad):
    pre_a = f"CUDA_VISIBLE_DEVICES={ga} " if ga else ""
    pre_b = f"CUDA_VISIBLE_DEVICES={gb} " if gb else ""
    make(tree, {"l.sh": f"{pre_a}setsid torchrun --master_port 1 t.py > a.log &\n"
                        f"{pre_b}setsid torchrun --master_port 2 t.py > b.log &\nwait\n"})
    assert ("gpu-overlap" in ids(tree)[0]) is bad


def test_sequential_jobs_do_not_overlap(tree):
    make(tree, {"l.sh": "setsid torchrun t.py > a.log &\nwait\nsetsid torchrun t.py > b.log &\nwait\n"})
    assert ids(tree)[0] == []


@pytest.mark.parametrize("a,b,bad", [
    ("torchrun t.py", "torchrun t.py", True),  # both at the default 29500
    ("env PET_MASTER_PORT=29501 torchrun t.py", "torchrun --master_port 29501 t.py", True),
    # torchrun reads --master-port or PET_MASTER_PORT, never MASTER_PORT (torch/distributed/argparse_util.py)
    ("env MASTER_PORT=29501 torchrun t.py", "torchrun --master_port 29501 t.py", False),
    ("torchrun --master_port 29501 t.py", "torchrun --master_port 29502 t.py", False),
    ("llamafactory-cli train a.yaml", "llamafactory-cli train b.yaml", False),  # picks a free port
    ("torchrun --standalone t.py", "torchrun t.py", False),
])
def test_port_collision(tree, a, b, bad):
    make(tree, {"l.sh": f"CUDA_VISIBLE_DEVICES=0 setsid {a} > a.log &\nCUDA_VISIBLE_DEVICES=1 setsid {b} > b.log &\n"})
    assert ("port-collision" in ids(tree)[0]) is bad


def test_log_collision_is_a_warning(tree):
    make(tree, {"l.sh": "CUDA_VISIBLE_DEVICES=0 setsid torchrun --master_port 1 t.py > x.log &\n"
                        "CUDA_VISIBLE_DEVICES=1 setsid torchrun --master_port 2 t.py >> x.log &\n"})
    got, res = ids(tree)
    assert got == ["log-collision"] and res.exit_code() == 0 and res.exit_code(strict=True) == 1


OOM_LOG = """\
+ llamafactory-cli train c/a.yaml
  Instantaneous batch size per device = {micro}
  Gradient Accumulation steps = {accum}
[rank2]: torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB.
E1127 10:00:00.000000 1 torch/distributed/elastic/multiprocessing/api.py:1002] failed (exitcode: 1) local_rank: 2 (pid: 9) of binary: python
"""
SIGHUP_LOG = """\
+ llamafactory-cli train c/a.yaml
  Instantaneous batch size per device = 1
  Gradient Accumulation steps = 16
W1127 10:00:00.000000 1 torch/distributed/elastic/agent/server/api.py:753] Received 1 death signal, shutting down workers
"""


def _age(path, seconds):
    t = time.time() - seconds
    os.utime(path, (t, t))


def test_unremediated_failure_and_near_miss(tree):
    make(tree, {"c/a.yaml": lf("a", 1, 16), "a.log": OOM_LOG.format(micro=1, accum=16)})
    _age(tree / "c/a.yaml", 100)
    assert ids(tree)[0] == ["unremediated-failure"]
    make(tree, {"c/a.yaml": lf("a", 1, 16, extra="deepspeed: ds.json"), "ds.json": '{"zero_optimization": {"stage": 3}}'})
    assert ids(tree)[0] == []  # edited after the run


def test_memory_increase_after_oom_is_the_users_story(tree):
    make(tree, {"c/a.yaml": lf("a", 2, 8), "a.log": OOM_LOG.format(micro=1, accum=16)})
    got, res = ids(tree)
    assert got == ["memory-increase-after-oom"]
    assert "raises per-device memory" in res.findings[0].message


def test_memory_decrease_after_oom_is_fine(tree):
    make(tree, {"c/a.yaml": lf("a", 1, 16), "a.log": OOM_LOG.format(micro=2, accum=8)})
    got, _ = ids(tree)
    assert "memory-increase-after-oom" not in got and "unremediated-failure" not in got


def test_sighup_log_never_produces_memory_findings(tree):
    make(tree, {"c/a.yaml": lf("a", 2, 8), "a.log": SIGHUP_LOG})
    got, res = ids(tree)
    # the run used 1/16 and a SIGHUP killed it; the config now says 2/8: the origin story's "fix" is a finding of its
    # own (issue 21 item 9), an error since it raises per-device memory; never a memory fix for a hang-up
    assert got == ["memory-edit-after-non-memory-failure"]
    assert res.findings[0].severity == "error" and "raises per-device memory" in res.findings[0].message
    # near miss: a lower micro batch after a hang-up is said as useless, a warning
    make(tree, {"c/a.yaml": lf("a", 1, 32)})
    got, res = ids(tree)
    assert got == ["memory-edit-after-non-memory-failure"] and res.findings[0].severity == "warning"
    # near miss: the config still at the run's values: nothing to say about memory
    make(tree, {"c/a.yaml": lf("a", 1, 16)})
    assert ids(tree)[0] == []


def test_bad_path_and_unparseable_config_exit_2(tree):
    r = CliRunner().invoke(main, ["check", "nope"])
    assert r.exit_code == 2 and "nope: no such file" in r.output
    make(tree, {"c/a.yaml": "per_device_train_batch_size: [1\n"})
    r = CliRunner().invoke(main, ["check"])
    assert r.exit_code == 2 and "c/a.yaml" in r.output


def test_github_annotations(tree):
    make(tree, {"l.sh": "nohup torchrun t.py > a.log &\nwait\n"})
    r = CliRunner().invoke(main, ["check", "--format", "github"])
    assert r.output.startswith("::error file=l.sh,line=1,title=oomfix unprotected-launch::")


def test_log_collision_near_miss_distinct_logs(tree):
    make(tree, {"l.sh": "CUDA_VISIBLE_DEVICES=0 setsid torchrun --master_port 1 t.py > x.log &\n"
                        "CUDA_VISIBLE_DEVICES=1 setsid torchrun --master_port 2 t.py > y.log &\n"})
    assert ids(tree)[0] == []


def test_stale_run_near_miss_when_the_run_matches_the_config(tree):
    make(tree, {"c/a.yaml": lf("a", 1, 16), "a.log": SIGHUP_LOG})
    assert ids(tree)[0] == []


def test_standalone_comment_opts_a_config_out_of_directory_siblings(tree):
    make(tree, {"c/a.yaml": lf("a", 2, 8), "c/b.yaml": "# oomfix: standalone\n" + lf("b", 1, 16)})
    assert ids(tree)[0] == []


def test_wrapper_literal_nproc_gives_the_world_size(tree):
    make(tree, {"c/a.yaml": lf("a", 1, 16), "c/b.yaml": lf("b", 1, 16),
                "wrap4.py": 'import subprocess, sys\nsubprocess.run(["torchrun", "--nproc_per_node", "4", "t.py", sys.argv[1]])\n',
                "wrap2.py": 'import subprocess, sys\nsubprocess.run(["torchrun", "--nproc_per_node=2", "t.py", sys.argv[1]])\n',
                "l.sh": "CUDA_VISIBLE_DEVICES=0,1,2,3 PET_MASTER_PORT=1 setsid python wrap4.py c/a.yaml > a.log &\n"
                        "CUDA_VISIBLE_DEVICES=4,5 PET_MASTER_PORT=2 setsid python wrap2.py c/b.yaml > b.log &\n"})
    assert ids(tree)[0] == ["global-batch-mismatch"]


def _drift(res):
    return [f for f in res.findings if f.id == "sibling-drift"]


def test_sibling_severity_follows_the_evidence(tree):
    make(tree, {"c/a.yaml": lf("a", 2, 8), "c/b.yaml": lf("b", 1, 16)})
    drift = _drift(ids(tree)[1])
    # only alike in one directory: a warning that says why they were grouped, and names its own fix
    assert drift and all(f.severity == "warning" and "grouped because" in f.message for f in drift)
    assert all("oomfix apply --align-siblings" in f.fix for f in drift)
    make(tree, {"l.sh": "llamafactory-cli train c/a.yaml\nllamafactory-cli train c/b.yaml\n"})
    drift = _drift(ids(tree)[1])
    assert drift and all(f.severity == "warning" and "one after the other" in f.message for f in drift)
    # near miss (constructed after LLaMA-Factory's qwen3_lora_sft.yaml / qwen3_lora_sft_ds3.yaml): alike, but one
    # runs under DeepSpeed: a deliberate variant, no finding
    make(tree, {"c/b.yaml": lf("b", 1, 16, extra="deepspeed: ds.json"), "ds.json": '{"zero_optimization": {"stage": 3}}'})
    (tree / "l.sh").unlink()
    assert _drift(ids(tree)[1]) == []
    # started side by side, the same difference is an error, and "unset" is said as such, never None
    make(tree, {"l.sh": "CUDA_VISIBLE_DEVICES=0 setsid llamafactory-cli train c/a.yaml > a.log &\n"
                        "CUDA_VISIBLE_DEVICES=1 setsid llamafactory-cli train c/b.yaml > b.log &\nwait\n"})
    drift = _drift(ids(tree)[1])
    assert drift and all(f.severity == "error" and "side by side" in f.message for f in drift)
    assert any("unset" in f.message for f in drift) and not any("None" in f.message for f in drift)


def test_sibling_drift_needs_the_same_model_dataset_and_stage(tree):
    # constructed after axolotl's and LLaMA-Factory's example folders: a DPO config beside an SFT one, or two
    # configs on different data, are not siblings; a key one file leaves unset is not a drift
    make(tree, {"c/a.yaml": lf("a", 2, 8), "c/dpo.yaml": lf("d", 1, 16).replace("stage: sft", "stage: dpo"),
                "c/other.yaml": lf("o", 1, 16) + "dataset: other_data\n"})
    assert _drift(ids(tree)[1]) == []
    make(tree, {"c/pre.yaml": lf("p", 1, 16).replace("per_device_train_batch_size: 1\n", "")})
    assert not any("per_device_train_batch_size" in f.message for f in _drift(ids(tree)[1]))


def test_dev_null_is_not_a_log_collision_and_remote_nodes_share_a_port(tree):
    make(tree, {"l.sh": "CUDA_VISIBLE_DEVICES=0 setsid torchrun --master_port 1 t.py > /dev/null 2>&1 &\n"
                        "CUDA_VISIBLE_DEVICES=1 setsid torchrun --master_port 2 t.py > /dev/null 2>&1 &\n"
                        "ssh n1 'setsid torchrun --nnodes 2 --node_rank 1 --master_addr n0 --master_port 3 t.py' &\n"
                        "ssh n0 'setsid torchrun --nnodes 2 --node_rank 0 --master_addr n0 --master_port 3 t.py' &\n"
                        "wait\n"})
    assert ids(tree)[0] == []


@pytest.mark.parametrize("name,expected", [
    # what each set's README (../shared/corpus/launchers/siblings/*/README.md) says would collide if run together,
    # where the repository itself shows they run together (issue 18: evidence, else one summary line per directory)
    # WechatRobot: a foreground stage pipeline (sft, rm, dpo, ppo) with nothing that runs two at once: no finding
    ("WechatRobot", {}),
    # the task scripts split the GPUs (0,1 / 2,3 / 4,5 / 6,7): made to run at once; base.sh overlaps two of them
    ("AlignSurvey", {"task1.sh": {"GPU 0,1"}, "task2.sh": {"GPU 2,3"}}),
    ("leakage_influence", {"3.sh": {"GPU 6"}}),  # 0,1 / 3,6 / 4,5 / 6,7: 3.sh and 1.sh share GPU 6
    # both background their accelerate job on the default config: one summary line for the directory
    ("RID", {"train_sd_ensemble_dmd.sh": {"29500", "2 launcher scripts", "nothing here says"}}),
])
def test_sibling_launchers_of_real_repos_report_what_they_would_share(tmp_path, name, expected):
    import shutil

    from conftest import SHARED, shared_or_skip
    from oomfix.check import check_sibling_launchers

    src = SHARED / "corpus" / "launchers" / "siblings" / name
    shared_or_skip(src)
    shutil.copytree(src, tmp_path / name)
    found = {os.path.basename(f.file): f.message for f in check_sibling_launchers(discover([str(tmp_path / name)]))}
    assert set(found) == set(expected)
    for script, words in expected.items():
        assert all(w in found[script] for w in words), (script, found[script])


CLEAN_LOG = """\
+ llamafactory-cli train c/a.yaml
  Instantaneous batch size per device = {micro}
  Gradient Accumulation steps = {accum}
{{'train_runtime': 130.2, 'train_samples_per_second': 3.1, 'train_steps_per_second': 1.2, 'train_loss': 2.1, 'epoch': 20.0}}
"""


def test_content_before_time_outside_git(tree):
    # constructed: the user's tree copied without git, so every config is newer than the log; the log shows 1/16
    # and the config is still 1/16: unchanged since the OOM, whatever the mtimes say (issue 18 item 3)
    make(tree, {"a.log": OOM_LOG.format(micro=1, accum=16)})
    _age(tree / "a.log", 3600)
    make(tree, {"c/a.yaml": lf("a", 1, 16)})
    got, res = ids(tree)
    assert got == ["unremediated-failure"] and "content" in res.findings[0].message
    # near miss: newer and turning on what the log cannot show (ZeRO-3): edited since, no error
    make(tree, {"c/a.yaml": lf("a", 1, 16, extra="deepspeed: ds.json"), "ds.json": '{"zero_optimization": {"stage": 3}}'})
    assert ids(tree)[0] == []


def _ledger(tree, records):
    import json

    (tree / ".oomfix").mkdir(exist_ok=True)
    (tree / ".oomfix/runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def test_a_config_back_at_values_the_ledger_shows_oomed_is_an_error(tree):
    # constructed to what `oomfix run` writes (ledger.Attempt): attempt 1 at 2/8 died of cuda_oom, attempt 2 at
    # 1/16 trained; then the config was put back to 2/8 (issue 21 item 3)
    make(tree, {"c/a.yaml": lf("a", 2, 8), "logs/run-attempt1.log": OOM_LOG.format(micro=2, accum=8),
                "logs/run-attempt2.log": CLEAN_LOG.format(micro=1, accum=16)})
    _age(tree / "logs/run-attempt1.log", 600)
    _age(tree / "logs/run-attempt2.log", 300)
    base = {"command": "llamafactory-cli train c/a.yaml", "started": "2026-11-27T10:00:00Z",
            "ended": "2026-11-27T10:05:00Z", "files": [], "stopped_by": None, "run": "r1"}
    _ledger(tree, [{**base, "attempt": 1, "exit_code": 1, "log": "logs/run-attempt1.log", "class": "cuda_oom",
                    "rule": "cuda-oom-micro-split", "files": ["c/a.yaml"]},
                   {**base, "attempt": 2, "exit_code": 0, "log": "logs/run-attempt2.log", "class": "none",
                    "rule": None}])
    got, res = ids(tree)
    assert "known-oom-values" in got and res.exit_code() == 1
    f = next(f for f in res.findings if f.id == "known-oom-values")
    assert "run-attempt1.log" in f.message and f.severity == "error"
    # near miss: at the values that trained, nothing is wrong
    make(tree, {"c/a.yaml": lf("a", 1, 16)})
    assert "known-oom-values" not in ids(tree)[0]


def test_an_earlier_log_that_oomed_counts_without_a_ledger(tree):
    # constructed: two logs of one config (log names from the launcher), the older an OOM at 2/8, the newer clean
    make(tree, {"l.sh": "setsid llamafactory-cli train c/a.yaml > logs/a_$(date +%s).log 2>&1 &\n",
                "c/a.yaml": lf("a", 2, 8), "logs/a_1.log": OOM_LOG.format(micro=2, accum=8),
                "logs/a_2.log": CLEAN_LOG.format(micro=1, accum=16)})
    _age(tree / "logs/a_1.log", 600)
    _age(tree / "logs/a_2.log", 300)
    assert "known-oom-values" in ids(tree)[0]


def test_the_detached_supervisors_own_log_is_not_a_training_log(tree):
    # constructed to supervise.py: `oomfix run --detach` writes <base>-supervisor.log with its own `oomfix run:`
    # lines around a copy of the job's output; check must skip it, never diagnose it
    sup = "oomfix run: CUDA out of memory on rank 2\noomfix run: applied cuda-oom-micro-split\n" + \
        OOM_LOG.format(micro=1, accum=16)
    make(tree, {"c/a.yaml": lf("a", 1, 16), "logs/run-supervisor.log": sup, "logs/terminal.log": sup})
    _age(tree / "c/a.yaml", 100)
    got, res = ids(tree)
    assert got == [] and res.logs == 0
    # near miss: the attempt log itself (no `oomfix run:` lines) is read
    make(tree, {"logs/run-attempt1.log": OOM_LOG.format(micro=1, accum=16)})
    assert ids(tree)[0] == ["unremediated-failure"]


def test_the_genuine_origin_project(tmp_path, monkeypatch):
    # the genuine LLaMA-Factory project (../shared/corpus/genuine_lf/project, issue 21): two nohup'ed wrapper jobs
    # side by side, no CUDA_VISIBLE_DEVICES, LLaMA-Factory picking a free port, NPROC_PER_NODE=2 from wrapper.py
    import shutil

    from conftest import SHARED, shared_or_skip

    src = SHARED / "corpus" / "genuine_lf" / "project"
    shared_or_skip(src)
    shutil.copytree(src, tmp_path / "project", ignore=shutil.ignore_patterns("models", "data"))
    monkeypatch.chdir(tmp_path / "project")
    r = CliRunner().invoke(main, ["jobs", "start.sh", "--format", "json"])
    import json

    jobs = json.loads(r.output)["jobs"]
    assert [(j["line"], j["nproc"], j["master_port"], j["nohup"]) for j in jobs] == [(6, 2, "free", True),
                                                                                    (7, 2, "free", True)]
    res = run_check(["."])
    found = {(f.id, f.line) for f in res.findings}
    assert {("unprotected-launch", 6), ("unprotected-launch", 7), ("gpu-overlap", 7)} <= found
    assert not any(f.id == "port-collision" for f in res.findings)
    # after `oomfix apply --write` of the SIGHUP log: setsid on both lines, the GPU overlap remains
    shutil.copy(src / "start.sh.after_oomfix_apply", "start.sh")
    assert {f.id for f in run_check(["."]).findings} == {"gpu-overlap"}


def test_the_genuine_origin_story_with_its_sighup_logs(tmp_path, monkeypatch):
    # the genuine project with the two genuine SIGHUP logs under the names its launcher writes, then the story's
    # "memory fix" (sed 1/16 -> 2/8 on config a, as the corpus README records it)
    import shutil

    from conftest import SHARED, shared_or_skip

    g = SHARED / "corpus" / "genuine_lf"
    shared_or_skip(g / "project")
    root = tmp_path / "p"
    shutil.copytree(g / "project", root, ignore=shutil.ignore_patterns("models", "data"))
    os.chmod(root / "configs" / "qwen3_lora_sft_a.yaml", 0o644)
    (root / "logs").mkdir()
    shutil.copy(g / "sighup_interactive_nohup_job_a.log", root / "logs/train_gpu0123_20261204_101010.log")
    shutil.copy(g / "sighup_interactive_nohup_job_b.log", root / "logs/train_gpu4567_20261204_101010.log")
    monkeypatch.chdir(root)
    res = run_check(["."])
    # a SIGHUP log of each job proves the hang-up reaches it: an error whatever the launcher looks like
    assert {(f.id, f.severity, f.line) for f in res.findings if f.id == "unprotected-launch"} == {
        ("unprotected-launch", "error", 6), ("unprotected-launch", "error", 7)}
    cfg = root / "configs" / "qwen3_lora_sft_a.yaml"
    os.chmod(cfg, 0o644)
    cfg.write_text(cfg.read_text().replace("per_device_train_batch_size: 1\n", "per_device_train_batch_size: 2\n")
                   .replace("gradient_accumulation_steps: 16\n", "gradient_accumulation_steps: 8\n"))
    found = {(f.id, os.path.basename(f.file), f.severity) for f in run_check(["."]).findings}
    assert ("memory-edit-after-non-memory-failure", "qwen3_lora_sft_a.yaml", "error") in found
    assert ("sibling-drift", "qwen3_lora_sft_b.yaml", "error") in found
    assert not any(f[0] in ("port-collision", "unremediated-failure", "memory-increase-after-oom") for f in found)


def test_sibling_collision_needs_a_plan_the_whole_directory_takes_part_in(tree):
    from oomfix.check import check_sibling_launchers, discover

    # constructed: two scripts splitting the GPUs (0,1 / 2,3) and a third on 2,3: the split is the evidence
    make(tree, {"s/a.sh": "CUDA_VISIBLE_DEVICES=0,1 setsid torchrun --master_port 1 t.py > a.log &\n",
                "s/b.sh": "CUDA_VISIBLE_DEVICES=2,3 setsid torchrun --master_port 2 t.py > b.log &\n",
                "s/c.sh": "CUDA_VISIBLE_DEVICES=2,3 setsid torchrun --master_port 3 t.py > c.log &\n"})
    found = list(check_sibling_launchers(discover([str(tree / "s")])))
    assert [(os.path.basename(f.file), f.line) for f in found] == [("c.sh", 1)] and "GPU 2,3" in found[0].message
    # near miss: a fourth script that pins no GPUs and no port: the folder is no plan, one summary line at most
    make(tree, {"s/d.sh": "setsid torchrun t.py > d.log &\n"})
    found = list(check_sibling_launchers(discover([str(tree / "s")])))
    assert len(found) == 1 and found[0].line is None and "nothing here says" in found[0].message
    # near miss: foreground scripts with nothing that runs them together: no finding
    for n in "abcd":
        p = tree / "s" / f"{n}.sh"
        p.write_text(p.read_text().replace(" &\n", "\n"))
    assert list(check_sibling_launchers(discover([str(tree / "s")]))) == []


def test_one_odd_port_among_scripts_that_share_one_is_no_plan_to_run_together(tree):
    from oomfix.check import check_sibling_launchers, discover

    # constructed: scripts that take turns on one GPU set and one port (29500), one of them edited to 29599 once;
    # they all truncate the same log. A port split needs every script on a port of its own.
    gpus = "CUDA_VISIBLE_DEVICES=0,1,2,3"
    make(tree, {f"s/{n}.sh": f"{gpus} torchrun --master_port {p} t.py | tee out/train.log\n"
                for n, p in (("a", 29500), ("b", 29500), ("c", 29500), ("d", 29599))})
    assert [f for f in check_sibling_launchers(discover([str(tree / "s")])) if f.line is not None] == []
    # near miss: every script on a port of its own is a plan to run them at once
    make(tree, {f"s/{n}.sh": f"{gpus} torchrun --master_port {p} t.py | tee out/train.log\n"
                for n, p in (("a", 29500), ("b", 29501), ("c", 29502), ("d", 29599))})
    assert [f for f in check_sibling_launchers(discover([str(tree / "s")])) if f.line is not None]


@pytest.mark.parametrize("files,severity", [
    # constructed to the measured behaviour (issue 21 item 8): a script that starts `nohup ... &` and exits
    ({"l.sh": "nohup torchrun t.py > a.log 2>&1 &\n"}, "warning"),
    ({"l.sh": "nohup torchrun t.py > a.log 2>&1 &\nwait\n"}, "error"),  # it keeps the terminal's foreground
    ({"l.sh": "nohup torchrun t.py > a.log 2>&1\n"}, "error"),  # in the foreground
    ({"l.sh": "nohup torchrun t.py > a.log 2>&1 &\n", "run.sh": "source ./l.sh\n"}, "error"),  # meant to be sourced
    ({"l.sh": "# usage: source l.sh\nnohup torchrun t.py > a.log 2>&1 &\n"}, "error"),
    ({"l.sh": "nohup torchrun t.py > a.log 2>&1 &\nreturn 0\n"}, "error"),  # only a sourced script returns
])
def test_unprotected_launch_says_which_case_the_launcher_is(tree, files, severity):
    make(tree, files)
    found = [f for f in ids(tree)[1].findings if f.id == "unprotected-launch" and f.file.endswith("l.sh")]
    assert [f.severity for f in found] == [severity] and "setsid" in found[0].fix


def test_global_batch_of_a_deliberate_variant_is_not_compared(tree):
    # constructed: one launcher runs two alike configs one after the other on 2 and 4 GPUs
    make(tree, {"l.sh": "CUDA_VISIBLE_DEVICES=0,1 llamafactory-cli train c/a.yaml\n"
                        "CUDA_VISIBLE_DEVICES=0,1,2,3 llamafactory-cli train c/b.yaml\n",
                "c/a.yaml": lf("a", 1, 16), "c/b.yaml": lf("b", 1, 16)})
    assert "global-batch-mismatch" in ids(tree)[0]
    # near miss: the 4-GPU one runs under ZeRO-3, a variant on purpose: nothing to compare
    make(tree, {"c/b.yaml": lf("b", 1, 16, extra="deepspeed: ds.json"), "ds.json": '{"zero_optimization": {"stage": 3}}'})
    assert "global-batch-mismatch" not in ids(tree)[0]


def test_framework_presets_are_resolved_as_the_framework_does(tree):
    # constructed to ms-swift's sft_args.py _init_deepspeed: `deepspeed: zero3` is swift's bundled file
    make(tree, {"c/swift.yaml": "model: Qwen/Qwen2.5-7B-Instruct\ntuner_type: lora\nper_device_train_batch_size: 1\n"
                                "gradient_accumulation_steps: 8\ndeepspeed: zero3\n"})
    got, res = ids(tree)
    assert "deepspeed-mismatch" not in got and res.exit_code() == 0
    # axolotl reads deepspeed_configs/zero3.json from where it runs (`axolotl fetch deepspeed_configs`): a warning
    make(tree, {"c/ax.yaml": "base_model: m\nmicro_batch_size: 1\ngradient_accumulation_steps: 4\n"
                             "deepspeed: deepspeed_configs/zero3_bf16.json\n"})
    got, res = ids(tree)
    f = [x for x in res.findings if x.id == "deepspeed-mismatch"]
    assert [x.severity for x in f] == ["warning"] and "axolotl fetch deepspeed_configs" in f[0].fix
    # near miss: any other missing file is an error
    make(tree, {"c/lf.yaml": lf("x", extra="deepspeed: examples/deepspeed/ds_z3_config.json")})
    assert any(x.id == "deepspeed-mismatch" and x.severity == "error" for x in ids(tree)[1].findings)


def test_a_file_named_on_the_command_line_is_read_as_a_log_whatever_its_name(tree):
    from oomfix.check import discover

    # constructed: SLURM's default output name; a directory walk keeps to *.log, a named file is read
    make(tree, {"slurm-2859.out": "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB.\n"})
    assert discover([str(tree)]).logs == []
    assert [os.path.basename(x) for x in discover([str(tree / "slurm-2859.out")]).logs] == ["slurm-2859.out"]
