"""`oomfix apply`: the user's story end to end, through the command line, as a new user would run it."""
import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from oomfix.cli import main

DEMO = Path(__file__).resolve().parent.parent / "oomfix" / "demo_data"


def run(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def snapshot(root):
    return {p: p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file() and ".oomfix" not in p.parts}


def test_dry_run_is_the_default_and_writes_nothing(project):
    before = snapshot(project)
    r = run("apply", "logs/job_a.log", "--all-configs")
    assert r.exit_code == 0, r.output
    assert "--- a/configs/qwen3_14b_a.yaml" in r.output and "--- a/configs/qwen3_14b_b.yaml" in r.output
    assert "dry run" in r.output
    assert snapshot(project) == before and not (project / ".oomfix" / "journal.jsonl").exists()


def test_oom_moves_both_siblings_to_the_same_rung_keeping_global_batch(project):
    r = run("apply", "logs/job_a.log", "--all-configs", "--write", "--format", "json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["rule"] == "cuda-oom-zero3" and out["written"]
    assert {e["file"] for e in out["edits"]} == {"configs/qwen3_14b_a.yaml", "configs/qwen3_14b_b.yaml"}
    for e in out["edits"]:
        assert e["global_batch_before"] == e["global_batch_after"] == 64 and e["world_size"] == 4
    a = (project / "configs/qwen3_14b_a.yaml").read_text()
    b = (project / "configs/qwen3_14b_b.yaml").read_text()
    assert "deepspeed: configs/ds/ds_z3_config.json  # choices" in a
    assert a.replace("sft_a", "sft_b") == b  # the siblings still agree everywhere but their output paths


def _set_two_eight(project, which):
    for x in which:
        p = project / f"configs/qwen3_14b_{x}.yaml"
        p.write_text(p.read_text().replace("per_device_train_batch_size: 1", "per_device_train_batch_size: 2")
                     .replace("gradient_accumulation_steps: 16", "gradient_accumulation_steps: 8"))


@pytest.mark.parametrize("which", ["ab", "a"], ids=["both at 2/8", "one drifted to 2/8"])
def test_siblings_at_two_eight_go_to_one_sixteen_together(project, which):
    # "a": the story's third mistake, one sibling "fixed" to 2/8 and the other left at 1/16: both end at 1/16
    _set_two_eight(project, which)
    r = run("apply", "logs/job_a.log", "--all-configs", "--write")
    assert r.exit_code == 0, r.output
    for x in "ab":
        text = (project / f"configs/qwen3_14b_{x}.yaml").read_text()
        assert "per_device_train_batch_size: 1\n" in text and "gradient_accumulation_steps: 16\n" in text


def test_sighup_changes_no_config_and_proposes_setsid(project):
    before = snapshot(project)
    r = run("apply", "logs/job_b.log", "--all-configs")
    assert r.exit_code == 0
    assert "+CUDA_VISIBLE_DEVICES=0,1,2,3 setsid nohup llamafactory-cli" in r.output
    assert "+CUDA_VISIBLE_DEVICES=4,5,6,7 setsid nohup llamafactory-cli" in r.output
    assert "qwen3_14b" not in "".join(l for l in r.output.splitlines() if l.startswith(("---", "+++")))
    assert snapshot(project) == before
    r = run("apply", "logs/job_b.log", "--write")
    assert r.exit_code == 0
    assert (project / "launch.sh").read_text().count("setsid nohup") == 2
    for x in "ab":
        assert (project / f"configs/qwen3_14b_{x}.yaml").read_bytes() == before[project / f"configs/qwen3_14b_{x}.yaml"]


def test_second_apply_of_the_same_log_changes_nothing_and_undo_restores_bytes(project):
    before = snapshot(project)
    assert run("apply", "logs/job_a.log", "--all-configs", "--write").exit_code == 0
    after = snapshot(project)
    r = run("apply", "logs/job_a.log", "--all-configs", "--write")
    assert r.exit_code == 0 and "already applied" in r.output
    assert snapshot(project) == after
    r = run("undo")
    assert r.exit_code == 0
    assert snapshot(project) == before


def test_undo_refuses_when_a_file_changed_since(project):
    assert run("apply", "logs/job_a.log", "--all-configs", "--write").exit_code == 0
    p = project / "configs/qwen3_14b_b.yaml"
    p.write_text(p.read_text() + "# hand edit\n")
    r = CliRunner().invoke(main, ["undo"])
    assert r.exit_code == 2 and "qwen3_14b_b.yaml: changed since oomfix wrote it" in r.output


def test_non_memory_failure_changes_nothing(project, tmp_path):
    log = project / "logs" / "job_c.log"
    log.write_text("[rank0]: Traceback (most recent call last):\n[rank0]: KeyError: 'labels'\n")
    before = snapshot(project)
    r = run("apply", "logs/job_c.log", "--all-configs", "--write")
    assert r.exit_code == 0 and "no config change" in r.output
    assert snapshot(project) == before


def test_no_rung_left_exits_1_and_says_what_is_left(project):
    for x in "ab":
        p = project / f"configs/qwen3_14b_{x}.yaml"
        p.write_text(p.read_text().replace("ds_z2_config.json  #", "ds_z3_offload_config.json  #"))
    r = run("apply", "logs/job_a.log")
    assert r.exit_code == 1
    assert "cuda-oom-shorter-sequences" in r.output and "--allow-semantic-changes" in r.output
    r = run("apply", "logs/job_a.log", "--allow-semantic-changes")
    assert r.exit_code == 0 and "+cutoff_len: 2048" in r.output


def test_newest_log_is_picked_and_named(project):
    import os
    import time

    os.utime(project / "logs/job_b.log", (time.time() + 10, time.time() + 10))
    r = run("apply")
    assert "using the newest log, logs/job_b.log" in r.output


def test_config_not_found_is_exit_2(project):
    r = CliRunner().invoke(main, ["apply", "logs/job_a.log", "--config", "nope.yaml"])
    assert r.exit_code == 2 and "nope.yaml: config not found" in r.output


def test_standalone_deepspeed_json_is_a_config_too(tmp_path, monkeypatch):
    import sys

    sys.path.insert(0, str(DEMO.parent.parent / "fixtures" / "constructed"))
    import make

    monkeypatch.chdir(tmp_path)
    ds = '{\n  "train_batch_size": 64,\n  "train_micro_batch_size_per_gpu": 2,\n  "gradient_accumulation_steps": 8\n}\n'
    Path("ds_config.json").write_text(ds)
    # the log of a run of this JSON (micro 2 x accumulation 8, as it says): a log at 1/16 would be a run of another
    # setting, whose split brings back what failed (refused since the QA pass)
    Path("train.log").write_text(make.cuda_oom_rank2("ds_config.json", micro=2, accum=8))
    r = run("apply", "train.log", "--write")
    assert r.exit_code == 0, r.output
    assert Path("ds_config.json").read_text() == ds.replace('"train_micro_batch_size_per_gpu": 2',
                                                           '"train_micro_batch_size_per_gpu": 1').replace(
        '"gradient_accumulation_steps": 8', '"gradient_accumulation_steps": 16')


# --- issue 21 item 4: "already applied" is judged from the configs' content -------------------------------------

def test_reverted_configs_get_the_fix_proposed_again(project):
    before = snapshot(project)
    assert run("apply", "logs/job_a.log", "--all-configs", "--write").exit_code == 0
    assert "already applied" in run("apply", "logs/job_a.log", "--all-configs").output
    for p, data in before.items():  # `git checkout configs/`: the files are back at the values that OOMed
        if "configs" in p.parts:
            p.write_bytes(data)
    r = run("apply", "logs/job_a.log", "--all-configs", "--format", "json")
    out = json.loads(r.output)
    assert out["status"] == "edits" and out["rule"] == "cuda-oom-zero3"
    assert run("apply", "logs/job_a.log", "--all-configs", "--write").exit_code == 0
    assert "ds_z3_config.json" in (project / "configs/qwen3_14b_a.yaml").read_text()
    assert "already applied" in run("apply", "logs/job_a.log", "--all-configs").output


def test_reverted_launcher_gets_setsid_proposed_again(project):
    before = (project / "launch.sh").read_bytes()
    assert run("apply", "logs/job_b.log", "--write").exit_code == 0
    (project / "launch.sh").write_bytes(before)
    out = json.loads(run("apply", "logs/job_b.log", "--format", "json").output)
    assert out["status"] == "edits" and "setsid" in out["edits"][0]["diff"]


# --- issue 21 item 7c: the default LOG prefers the log that failed over a clean one of the same moment ----------

def test_default_log_prefers_the_failed_log_written_in_the_same_second(tmp_path, monkeypatch):
    from conftest import SHARED, shared_or_skip
    from oomfix.apply import newest_log

    corpus = SHARED / "corpus" / "genuine_lf"
    shared_or_skip(corpus)
    logs = tmp_path / "logs"
    logs.mkdir()
    failed = logs / "train_gpu0_a.log"
    clean = logs / "train_gpu1_b.log"
    shutil.copy(corpus / "sighup_tmux_script_held_job_a.log", failed)
    shutil.copy(corpus / "clean_job_b.log", clean)
    import os
    t = 1_700_000_000
    os.utime(failed, (t, t + 0.2))
    os.utime(clean, (t, t + 0.9))  # the clean sibling was stamped last, within the same second
    monkeypatch.chdir(tmp_path)
    assert newest_log(".") == os.path.join("logs", "train_gpu0_a.log")
    os.utime(clean, (t, t + 60))  # a clean run a minute later is the newest log, whatever the older one says
    assert newest_log(".") == os.path.join("logs", "train_gpu1_b.log")


# --- issue 21 item 9: apply --align-siblings ------------------------------------------------------------------

def test_align_siblings_moves_the_drifted_sibling_to_the_lower_memory_split(project):
    _set_two_eight(project, "b")
    before = snapshot(project)
    r = run("apply", "--align-siblings")
    assert r.exit_code == 0 and "dry run" in r.output and snapshot(project) == before
    out = json.loads(run("apply", "--align-siblings", "--format", "json").output)
    assert out["status"] == "edits" and [e["file"] for e in out["edits"]] == ["configs/qwen3_14b_b.yaml"]
    assert out["log"] is None and out["class"] is None and out["diagnosis"] is None  # no log read (QA pass: was "")
    assert out["edits"][0]["global_batch_before"] == out["edits"][0]["global_batch_after"] == 64
    assert run("apply", "--align-siblings", "--write").exit_code == 0
    b = (project / "configs/qwen3_14b_b.yaml").read_text()
    a = (project / "configs/qwen3_14b_a.yaml").read_text()
    assert a.replace("sft_a", "sft_b") == b  # byte-identical apart from the output path
    r = run("apply", "--align-siblings")  # idempotent
    assert r.exit_code == 0 and "already agree" in r.output
    assert run("undo").exit_code == 0
    assert snapshot(project) == before


def test_align_siblings_leaves_different_global_batches_alone(project):
    p = project / "configs/qwen3_14b_b.yaml"
    p.write_text(p.read_text().replace("gradient_accumulation_steps: 16", "gradient_accumulation_steps: 8"))
    before = snapshot(project)
    r = run("apply", "--align-siblings", "--write")
    assert r.exit_code == 0 and "global batches differ" in r.output
    assert "already agree" not in r.output  # QA pass: it said "already agree ... nothing to change: ... differ"
    assert snapshot(project) == before


def test_align_siblings_without_configs_does_not_say_they_agree(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = run("apply", "--align-siblings")
    assert r.exit_code == 0
    assert "no sibling configs below ." in r.output and "already agree" not in r.output


def test_align_siblings_takes_no_log(project):
    r = CliRunner().invoke(main, ["apply", "logs/job_a.log", "--align-siblings"])
    assert r.exit_code == 2


def test_align_siblings_on_the_genuine_project(tmp_path, monkeypatch):
    from conftest import SHARED, shared_or_skip

    src = SHARED / "corpus" / "genuine_lf" / "project"
    shared_or_skip(src)
    dst = tmp_path / "project"
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("models", "data"))
    a = dst / "configs/qwen3_lora_sft_a.yaml"
    # the story's "memory fix" after a SIGHUP, as genuine_lf/README.md says it was made
    a.write_text(a.read_text().replace("per_device_train_batch_size: 1\n", "per_device_train_batch_size: 2\n")
                 .replace("gradient_accumulation_steps: 16\n", "gradient_accumulation_steps: 8\n"))
    monkeypatch.chdir(dst)
    out = json.loads(run("apply", "--align-siblings", "--format", "json").output)
    assert out["status"] == "edits" and [e["file"] for e in out["edits"]] == ["configs/qwen3_lora_sft_a.yaml"]
    assert {(c["key"], c["old"], c["new"]) for c in out["edits"][0]["changes"]} == \
        {("per_device_train_batch_size", 2, 1), ("gradient_accumulation_steps", 8, 16)}


def test_a_config_edited_elsewhere_still_carries_the_fix(project):
    # a hand edit of another key is not a revert: proposing the log's fix again would climb a second rung
    assert run("apply", "logs/job_a.log", "--all-configs", "--write").exit_code == 0
    for x in "ab":
        p = project / f"configs/qwen3_14b_{x}.yaml"
        p.write_text(p.read_text().replace("learning_rate: 1.0e-5", "learning_rate: 2.0e-5"))
    r = run("apply", "logs/job_a.log", "--all-configs")
    assert "already applied" in r.output


def test_one_sibling_put_back_is_named_not_double_fixed(project):
    b = project / "configs/qwen3_14b_b.yaml"
    before_b = b.read_bytes()
    assert run("apply", "logs/job_a.log", "--all-configs", "--write").exit_code == 0
    b.write_bytes(before_b)
    r = run("apply", "logs/job_a.log", "--all-configs")
    assert "already applied" in r.output and "configs/qwen3_14b_b.yaml is back at its values" in r.output


# --- found by the QA pass on the genuine LLaMA-Factory corpus (../shared/corpus/genuine_lf) -----------------------

# constructed from the lines of genuine_lf/nan_loss.log (HF Trainer 5 metrics dicts, string-valued)
NAN_LOG = ("{'loss': '6.165', 'grad_norm': '1.663', 'learning_rate': '1e+30', 'epoch': '0.125'}\n"
           "{'loss': '6.238', 'grad_norm': 'nan', 'learning_rate': '9.619e+29', 'epoch': '0.25'}\n"
           "{'loss': '0', 'grad_norm': 'nan', 'learning_rate': '8.536e+29', 'epoch': '0.375'}\n")
# constructed from the torchrun agent lines of genuine_lf/sigterm_agent_job_a.log
SIGTERM_LOG = (
    "W1203 10:28:45.537000 31704 torch/distributed/elastic/agent/server/api.py:753] Received 15 death signal, "
    "shutting down workers\n"
    "W1203 10:28:45.537000 31704 torch/distributed/elastic/multiprocessing/api.py:1028] Sending process 31723 "
    "closing signal SIGTERM\n"
    "W1203 10:28:45.538000 31704 torch/distributed/elastic/multiprocessing/api.py:1028] Sending process 31724 "
    "closing signal SIGTERM\n")


def test_nan_loss_without_opt_in_needs_no_config_and_says_why(tmp_path, monkeypatch):
    # was: "oomfix: error: cannot find the config the run used; pass --config PATH", exit 2, for a log whose only
    # rungs are opt-in anyway (and `oomfix verdict` of it: exit 2 instead of a verdict)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "nan.log").write_text(NAN_LOG)
    r = run("apply", "nan.log")
    assert r.exit_code == 1, r.output
    assert "no config change without --allow-semantic-changes" in r.output and "nan-loss-bf16" in r.output
    j = json.loads(run("apply", "nan.log", "--format", "json").output)
    assert j["status"] == "no_rung" and j["edits"] == []
    v = run("verdict", "nan.log")
    assert v.exit_code == 4, v.output  # no-rung: a person decides (--allow-semantic-changes)


def test_nan_loss_rung_whose_condition_does_not_hold_is_not_called_in_place(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "nan.log").write_text(NAN_LOG)
    (tmp_path / "sft.yaml").write_text("model_name_or_path: Qwen/Qwen3-4B\nstage: sft\ndo_train: true\n"
                                       "per_device_train_batch_size: 1\ngradient_accumulation_steps: 16\nbf16: true\n")
    r = run("apply", "nan.log", "--config", "sft.yaml", "--allow-semantic-changes")
    assert r.exit_code == 1, r.output
    assert "already in place" not in r.output
    assert "nan-loss-bf16 (its condition does not hold for this config)" in r.output


def test_sigterm_advice_does_not_say_no_config_change_twice(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "job.log").write_text(SIGTERM_LOG)
    r = run("apply", "job.log")
    assert r.exit_code == 0, r.output
    assert "sigterm: no config change." in r.output
    assert r.output.lower().count("no config change") == 1, r.output


# constructed from genuine_lf/port_in_use.log (LLaMA-Factory 0.9.5 + torch 2.13: MASTER_PORT=29531 held by another
# listener), lines cut to 400 characters
PORT_LOG = (
    '[INFO|2026-12-03 10:39:39] llamafactory.launcher:144 >> Initializing 2 distributed tasks a'
    't: 127.0.0.1:29531\n'
    '    rdzv_info = spec.rdzv_handler.next_rendezvous()\n'
    '                ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^\n'
    '  File "/home/ft/venv/lib/python3.11/site-packages/torch/distributed/elastic/rendezvous/st'
    'atic_tcp_rendezvous.py", line 67, in next_rendezvous\n'
    '    self._store = TCPStore(  # type: ignore[call-arg]\n'
    '                  ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^\n'
    'torch.distributed.DistNetworkError: The server socket has failed to listen on any local ne'
    'twork address. port: 29531, useIpv6: false, code: -98, name: EADDRINUSE, message: address '
    'already in use\n'
    'Traceback (most recent call last):\n'
    '  File "/root/.pyenv/versions/3.11.7/lib/python3.11/subprocess.py", line 571, in run\n'
    '    raise CalledProcessError(retcode, process.args,\n'
    "subprocess.CalledProcessError: Command '['torchrun', '--nnodes', '1', '--node_rank', '0', "
    "'--nproc_per_node', '2', '--master_addr', '127.0.0.1', '--master_port', '29531', '/home/ft"
    "/venv/lib/python3.11/site-packages/llamafactory/launcher.py', 'configs/qwen3_lora_sft_b.ya"
    "ml']' returned non-zero exit status 1.\n"
)


def test_port_in_use_held_by_something_else_is_not_called_already_fixed(project):
    # QA pass: the launcher's jobs do not collide (llamafactory-cli picks a free port), so no launcher edit: it said
    # "the launcher already has the fix", which sends a user looking for a fix that is not there
    (project / "logs/job_a.log").write_text(PORT_LOG)
    r = run("apply", "logs/job_a.log")
    assert r.exit_code == 0, r.output
    assert "already has the fix" not in r.output
    assert "port 29531 was held by something else" in r.output and "ss -ltnp | grep 29531" in r.output


def test_sighup_applied_from_below_the_project_root_says_where_to_run_it(project, monkeypatch):
    # QA pass: run from logs/, apply said only "no launcher script found for this log"
    monkeypatch.chdir(project / "logs")
    r = run("apply", "job_b.log")
    assert r.exit_code == 0, r.output
    assert "no launcher script found below the current directory" in r.output and "project root" in r.output



def test_a_rung_that_brings_back_the_failed_values_is_not_proposed(project):
    # QA pass: the config was raised to 2/8 after the run that failed at 1/16 (the log's values); splitting it
    # "back" to 1/16 restores exactly what failed, and apply proposed it (the memory model too, as "tight")
    p = project / "configs/qwen3_14b_a.yaml"
    p.write_text(p.read_text().replace("per_device_train_batch_size: 1\n", "per_device_train_batch_size: 2\n")
                 .replace("gradient_accumulation_steps: 16\n", "gradient_accumulation_steps: 8\n")
                 .replace("deepspeed: configs/ds/ds_z2_config.json", "deepspeed: configs/ds/ds_z3_config.json"))
    j = json.loads(run("apply", "logs/job_a.log", "--format", "json").output)
    assert not any(c["key"] == "per_device_train_batch_size" and c["new"] == 1
                   for e in j["edits"] for c in e["changes"]), j
    assert any("values the log's run failed with" in n for n in j["notes"] + [j["message"] or ""]), j
