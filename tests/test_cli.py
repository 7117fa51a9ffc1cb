"""The command line's interface: paths in diffs and summaries, Ctrl-C, exit codes, JSON and CI formats, colour,
progress, --quiet. (Each test is one bug a user hit, or one promise of the README.)"""
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from conftest import FIXTURES, ROOT, oomfix_cmd
import oomfix
from oomfix import progress
from oomfix.check import CheckResult, Finding, render_github
from oomfix.cli import EXIT_FAILED_RUN, main
from oomfix.report import SCHEMA_VERSION, Style, github_command, render_check_sarif

DEMO = ROOT / "oomfix" / "demo_data"
sys.path.insert(0, str(FIXTURES / "constructed"))
import make  # noqa: E402  (the constructed-log generator)


def run(*args, **kw):
    return CliRunner().invoke(main, list(args), **kw)


@pytest.fixture
def split_project(tmp_path, monkeypatch):
    """CONSTRUCTED: one LLaMA-Factory config at micro batch 2 and the CUDA OOM log of a run of it (make.py)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "sft.yaml").write_text(textwrap.dedent("""\
        model_name_or_path: Qwen/Qwen3-14B
        stage: sft
        finetuning_type: lora
        per_device_train_batch_size: 2
        gradient_accumulation_steps: 8
        output_dir: saves/sft
    """))
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "sft.log").write_text(make.cuda_oom_rank2("configs/sft.yaml", micro=2, accum=8))
    return tmp_path


# --- paths ------------------------------------------------------------------------------------------------------

def test_dry_run_diff_of_an_absolute_config_path_is_taken_by_git_apply(project):
    cfg = project / "configs" / "qwen3_14b_a.yaml"
    r = run("apply", "logs/job_a.log", "--config", str(cfg), "--all-configs")
    assert r.exit_code == 0, r.output
    assert "a//" not in r.output and "--- a/configs/qwen3_14b_a.yaml" in r.output
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    # the whole dry-run output, as `oomfix apply ... | git apply` feeds it (git skips the text around the diffs)
    p = subprocess.run(["git", "apply", "--check", "-"], input=r.output, text=True, capture_output=True, cwd=project)
    assert p.returncode == 0, p.stderr
    p = subprocess.run(["git", "apply", "-"], input=r.output, text=True, capture_output=True, cwd=project)
    assert p.returncode == 0 and "ds_z3_config.json  #" in cfg.read_text()


def test_summary_names_every_file_the_same_way(project):
    """The config the log names is found through the log's ancestors (an absolute path); its sibling through the
    directory listing (a relative one): the summary shows both relative to where oomfix runs."""
    os.chdir(project.parent)
    r = run("apply", "proj/logs/job_a.log", "--all-configs")
    assert r.exit_code == 0, r.output
    summary = r.output[r.output.index("Summary"):].splitlines()[1:3]
    assert [s.split(":")[0].strip() for s in summary] == ["proj/configs/qwen3_14b_a.yaml",
                                                          "proj/configs/qwen3_14b_b.yaml"]
    assert str(project) not in r.output
    d = json.loads(run("apply", "proj/logs/job_a.log", "--all-configs", "--format", "json").output)
    assert [e["file"] for e in d["edits"]] == ["proj/configs/qwen3_14b_a.yaml", "proj/configs/qwen3_14b_b.yaml"]
    assert all(e["diff"].startswith("--- a/proj/configs/") for e in d["edits"])


# --- Ctrl-C -----------------------------------------------------------------------------------------------------

def _reading_a_fifo(tmp_path):
    fifo = tmp_path / "pipe.log"
    os.mkfifo(fifo)
    return fifo


def test_ctrl_c_kills_oomfix_by_sigint(tmp_path):
    fifo = _reading_a_fifo(tmp_path)
    proc = subprocess.Popen(oomfix_cmd() + ["diagnose", str(fifo)], stderr=subprocess.PIPE, cwd=ROOT)
    w = os.open(fifo, os.O_WRONLY)  # a writer that never writes: oomfix (past its start-up) blocks reading
    try:
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        os.close(w)
    assert proc.returncode == -signal.SIGINT, err
    assert err.decode().strip() == "oomfix: interrupted"


def test_ctrl_c_in_a_shell_loop_ends_the_loop(tmp_path):
    """bash ends `for ...; do oomfix ...; done` on Ctrl-C only when its child died of SIGINT (an exit status of
    130 means "the child handled it": the loop goes on)."""
    fifo = _reading_a_fifo(tmp_path)
    cmd = " ".join(oomfix_cmd())
    script = f'for i in 1 2 3; do {cmd} diagnose "{fifo}"; echo "after $i"; done; echo finished'
    proc = subprocess.Popen(["bash", "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    w = os.open(fifo, os.O_WRONLY)  # returns once oomfix has opened the FIFO: it is past its start-up
    try:
        time.sleep(0.5)
        os.killpg(proc.pid, signal.SIGINT)  # what the terminal does on Ctrl-C: the whole foreground group
        out, err = proc.communicate(timeout=30)
    finally:
        os.close(w)
        if proc.poll() is None:  # the loop went on (the bug): end it
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert b"after" not in out and b"finished" not in out, (out, err)
    assert proc.returncode in (-signal.SIGINT, 130), (out, err)


# --- exit codes, --quiet, JSON ----------------------------------------------------------------------------------

def test_diagnose_exit_code(tmp_path):
    failed = str(FIXTURES / "constructed" / "lf_sighup.log")
    assert run("diagnose", failed).exit_code == 0
    assert run("diagnose", "--exit-code", failed).exit_code == EXIT_FAILED_RUN == 1
    clean = tmp_path / "clean.log"
    clean.write_text("{'train_runtime': 12.5, 'train_samples_per_second': 3.2, 'train_loss': 0.7, 'epoch': 1.0}\n")
    r = run("diagnose", "--exit-code", str(clean))
    assert r.exit_code == 0 and "No failure found" in r.output
    assert run("diagnose", "--exit-code", str(tmp_path / "missing.log")).exit_code == 2


def test_quiet_prints_nothing_and_the_status_tells(project):
    r = run("diagnose", "-q", "logs/job_a.log")
    assert r.exit_code == 1 and r.output == ""
    r = run("check", "--quiet")
    assert r.exit_code == 1 and r.output == ""
    r = run("apply", "logs/job_a.log", "--all-configs", "--write", "--quiet")
    assert r.exit_code == 0 and r.output == "" and "ds_z3" in (project / "configs/qwen3_14b_a.yaml").read_text()


def _json_invocations(project):
    sh = project / "launch.sh"
    return {
        "diagnose": ["diagnose", "--format", "json", "logs/job_a.log"],
        "apply": ["apply", "logs/job_a.log", "--format", "json"],
        "check": ["check", "--format", "json"],
        "jobs": ["jobs", str(sh), "--format", "json"],
        "runs": ["runs", "--format", "json"],
        "fit": ["fit", "configs/qwen3_14b_a.yaml", "--log", "logs/job_a.log", "--format", "json"],
        "verdict": ["verdict", "logs/job_a.log", "--format", "json"],
    }


def test_every_json_output_starts_with_schema_version(project):
    calls = _json_invocations(project)
    with_json = sorted(n for n, c in main.commands.items()
                       for p in c.params if isinstance(p, click.Option) and "--format" in p.opts
                       and isinstance(p.type, click.Choice) and "json" in p.type.choices)
    assert with_json == sorted(calls), "a command with --format json has no case here: add one"
    for name, args in calls.items():
        r = run(*args)
        assert r.exit_code in ((0, 1) if name != "verdict" else (0, 3, 4, 138, 143)), (name, r.output)
        doc = json.loads(r.output)
        assert list(doc)[0] == "schema_version" and doc["schema_version"] == SCHEMA_VERSION, name


# --- CI formats -------------------------------------------------------------------------------------------------

def _res(*findings):
    return CheckResult(tuple(findings), 1, 0, 0)


def test_github_annotation_escapes_the_file_property():
    f = Finding("sibling-drift", "error", "configs/sft,v1:100%.yaml", 3, "a: 50% off,\nsecond line", "fix it")
    line = render_github(_res(f)).rstrip("\n")
    assert "\n" not in line
    assert line == ("::error file=configs/sft%2Cv1%3A100%25.yaml,line=3,title=oomfix sibling-drift::"
                    "a: 50% off,%0Asecond line -- fix: fix it".replace("50% off", "50%25 off"))
    assert github_command("warning", {"file": "a.yaml", "line": None}, "m") == "::warning file=a.yaml::m"


def _validate_sarif(doc):
    """The parts of the SARIF 2.1.0 schema (sarif-schema-2.1.0.json) that a log of results must satisfy, and what
    GitHub's code scanning requires on top (a rule id, a message, a location with a relative URI and a line)."""
    assert doc["version"] == "2.1.0" and doc["$schema"].endswith("sarif-2.1.0.json")
    assert isinstance(doc["runs"], list) and len(doc["runs"]) == 1
    run_ = doc["runs"][0]
    driver = run_["tool"]["driver"]
    assert isinstance(driver["name"], str) and driver["name"]
    rule_ids = [r["id"] for r in driver["rules"]]
    assert len(set(rule_ids)) == len(rule_ids)
    for rule in driver["rules"]:
        assert set(rule) <= {"id", "name", "shortDescription", "fullDescription", "help", "helpUri", "properties"}
        assert isinstance(rule["shortDescription"]["text"], str)
    for base in run_.get("originalUriBaseIds", {}).values():
        assert base["uri"].startswith("file://") and base["uri"].endswith("/")
    for r in run_["results"]:
        assert set(r) <= {"ruleId", "ruleIndex", "level", "message", "locations", "properties"}
        assert r["level"] in ("none", "note", "warning", "error")
        assert isinstance(r["message"]["text"], str) and r["message"]["text"]
        assert rule_ids[r["ruleIndex"]] == r["ruleId"]
        (loc,) = r["locations"]
        phys = loc["physicalLocation"]
        uri = phys["artifactLocation"]["uri"]
        assert not uri.startswith("/") and " " not in uri and "," not in uri
        if "uriBaseId" in phys["artifactLocation"]:
            assert phys["artifactLocation"]["uriBaseId"] in run_["originalUriBaseIds"]
        if "region" in phys:
            assert isinstance(phys["region"]["startLine"], int) and phys["region"]["startLine"] >= 1


def test_check_sarif_validates_against_the_official_schema_when_given(project):
    """OOMFIX_SARIF_SCHEMA=path/to/sarif-schema-2.1.0.json (OASIS sarif-spec, sarif-2.1/schema/) validates the output
    against the real schema too (jsonschema needed); the structural test below always runs."""
    path = os.environ.get("OOMFIX_SARIF_SCHEMA")
    if not path:
        pytest.skip("OOMFIX_SARIF_SCHEMA not set")
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(Path(path).read_text())
    odd = Finding("stale-run", "warning", "configs/a b,c.yaml", None, "m", "f")
    for doc in (json.loads(run("check", "--format", "sarif").output), json.loads(render_check_sarif(_res(odd), "0"))):
        errors = list(jsonschema.Draft4Validator(schema, format_checker=jsonschema.FormatChecker()).iter_errors(doc))
        assert not errors, [e.message for e in errors]


def test_check_sarif_is_a_valid_sarif_log(project):
    r = run("check", "--format", "sarif")
    assert r.exit_code == 1, r.output
    doc = json.loads(r.output)
    _validate_sarif(doc)
    results = doc["runs"][0]["results"]
    # the demo's job_a config still has the values its OOM log shows (content decides, not the copy's file times)
    assert {x["ruleId"] for x in results} == {"unprotected-launch", "unremediated-failure"}
    launch = next(x for x in results if x["ruleId"] == "unprotected-launch")
    assert launch["locations"][0]["physicalLocation"] == {
        "artifactLocation": {"uri": "launch.sh", "uriBaseId": "%SRCROOT%"}, "region": {"startLine": 6}}
    odd = Finding("stale-run", "warning", "configs/a b,c.yaml", None, "m", "f")
    doc = json.loads(render_check_sarif(_res(odd), "0"))
    _validate_sarif(doc)
    assert doc["runs"][0]["results"][0]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == \
        "configs/a%20b%2Cc.yaml"


# --- what a relaunch check says right after a fix ----------------------------------------------------------------

def test_no_stale_run_warning_right_after_a_journalled_fix(split_project):
    r = run("apply", "logs/sft.log", "--write")
    assert r.exit_code == 0 and "per_device_train_batch_size: 2 -> 1" in r.output, r.output
    r = run("check", "--strict")
    assert "stale-run" not in r.output and r.exit_code == 0, r.output
    # a later hand edit of the same config is still reported
    cfg = split_project / "configs" / "sft.yaml"
    cfg.write_text(cfg.read_text().replace("gradient_accumulation_steps: 16", "gradient_accumulation_steps: 4"))
    r = run("check", "--strict")
    assert r.exit_code == 1


# --- YAML errors ------------------------------------------------------------------------------------------------

def test_yaml_syntax_error_is_file_line_col_with_its_cause(split_project):
    (split_project / "configs" / "sft.yaml").write_text("stage: sft\nper_device_train_batch_size: [1, 2\nx: 1\n")
    r = run("apply", "logs/sft.log", "--config", "configs/sft.yaml")
    assert r.exit_code == 2
    assert r.output.strip() == ("oomfix: error: configs/sft.yaml:3:2: cannot parse as YAML: expected ',' or ']', "
                                "but got ':' (while parsing a flow sequence at line 2, column 30)")


# --- colour and progress ------------------------------------------------------------------------------------------

class _Tty(io.StringIO):
    def isatty(self):
        return True


@pytest.mark.parametrize("value,colour", [(None, True), ("", True), ("1", False), ("0", False)])
def test_no_color_only_when_set_and_not_empty(monkeypatch, value, colour):
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    if value is not None:
        monkeypatch.setenv("NO_COLOR", value)
    assert Style(_Tty()).color is colour
    assert Style(io.StringIO()).color is False


def test_progress_only_on_a_terminal_and_only_for_long_reads(tmp_path, monkeypatch):
    monkeypatch.setenv("TERM", "xterm")
    log = tmp_path / "big.log"
    log.write_bytes(b"x" * 1000 + b"\n")
    from oomfix import reader

    # not a terminal: nothing, and the reader's hook is left alone
    pipe = io.StringIO()
    with progress.reading("reading big.log", [str(log)], stream=pipe, delay=0, interval=0.01):
        assert reader.PROGRESS is None
    assert pipe.getvalue() == ""
    # a terminal, a short read: nothing
    tty = _Tty()
    with progress.reading("reading big.log", [str(log)], stream=tty):
        reader.PROGRESS(500)
    assert tty.getvalue() == ""
    # a terminal, a long read: a few updates a second, then the line is erased
    tty = _Tty()
    with progress.reading("reading big.log", [str(log)], stream=tty, delay=0.05, interval=0.1):
        reader.PROGRESS(501)
        time.sleep(0.6)
    out = tty.getvalue()
    assert reader.PROGRESS is None
    updates = out.count("oomfix: reading big.log: 501 B of 1.0 KB (50%)")
    assert 2 <= updates <= 7, out
    assert out.endswith("\r\x1b[K") and "\n" not in out
    assert not progress.wanted(tty, quiet=True)


def test_progress_counts_what_the_reader_reads(tmp_path):
    log = tmp_path / "a.log"
    log.write_bytes(b"step 1\n" * 1000)
    seen = []
    from oomfix import reader

    reader.PROGRESS = seen.append
    try:
        run("diagnose", str(log))
    finally:
        reader.PROGRESS = None
    assert sum(seen) == 7000
    assert progress.total_size([str(log)]) == 7000 and progress.total_size(["-"]) is None


# --- --help --------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(main.commands))
def test_every_command_help_has_an_example(name):
    r = run(name, "--help")
    assert r.exit_code == 0
    assert "Example:" in r.output and f"oomfix {name}" in r.output.split("Example:", 1)[1]


def test_fit_help_names_its_values_and_exit_status():
    # QA pass: `--log TEXT` / `--gpu-memory FLOAT` told a new user nothing; the exit status was not said
    r = run("fit", "--help")
    assert "--log LOG" in r.output and "--gpu-memory GIB" in r.output and "Exit status:" in r.output


# --- undo is a stack --------------------------------------------------------------------------------------------

def test_undo_takes_back_one_apply_at_a_time_newest_first(project):
    cfg, launcher = project / "configs/qwen3_14b_a.yaml", project / "launch.sh"
    original = (cfg.read_bytes(), launcher.read_bytes())
    assert run("apply", "logs/job_a.log", "--all-configs", "--write").exit_code == 0
    assert run("apply", "logs/job_b.log", "--write").exit_code == 0
    fixed_cfg = cfg.read_bytes()
    assert fixed_cfg != original[0] and launcher.read_bytes() != original[1]
    r = run("undo")
    assert r.exit_code == 0 and r.output.endswith("restored launch.sh\n"), r.output
    assert launcher.read_bytes() == original[1] and cfg.read_bytes() == fixed_cfg
    r = run("undo")
    assert r.output.endswith("restored configs/qwen3_14b_a.yaml, configs/qwen3_14b_b.yaml\n"), r.output
    assert cfg.read_bytes() == original[0]
    r = run("undo")
    assert r.exit_code == 2 and "nothing to undo" in r.output


def test_diagnose_config_that_does_not_exist_is_an_input_error(project):
    # QA pass: `diagnose LOG --config nope.yaml` printed "config nope.yaml" under "Run" as if the run had used it
    for bad, why in (("nope.yaml", "nope.yaml: config not found"), ("configs", "configs: is a directory")):
        r = CliRunner().invoke(main, ["diagnose", "logs/job_a.log", "--config", bad])
        assert r.exit_code == 2 and why in r.output and "Traceback" not in r.output, r.output
    with pytest.raises(oomfix.ConfigError):
        oomfix.diagnose(["logs/job_a.log"], config="nope.yaml")
    assert run("diagnose", "logs/job_a.log", "--config", "configs/qwen3_14b_b.yaml").exit_code == 0


def test_diagnose_json_always_has_the_flight_recorder_key(project):
    # QA pass: the key appeared only when dumps were read, though README says every listed key is always present
    d = json.loads(run("diagnose", "logs/job_a.log", "--format", "json").output)
    assert d["schema_version"] == 1 and "flight_recorder" in d and d["flight_recorder"] is None
