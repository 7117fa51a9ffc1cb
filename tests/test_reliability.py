"""Reliability and security: hostile inputs, crashes mid-write, concurrent runs. Nothing lost, nothing leaked.

The kill loop and the big inputs are generated on the fly and bounded (OOMFIX_KILL_ITERATIONS, default 40).
"""
import errno
import gzip
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from conftest import FIXTURES, oomfix_cmd
from oomfix.classify import diagnose
from oomfix.editor import ValueEdit, edit_text, load_yaml_safely
from oomfix.errors import InputError

sys.path.insert(0, str(FIXTURES / "constructed"))
import make  # noqa: E402  (the constructed-log generator)

KILL_ITERATIONS = int(os.environ.get("OOMFIX_KILL_ITERATIONS", "40"))


def cli(*args, cwd=None, input=None, timeout=120):
    return subprocess.run(oomfix_cmd() + list(args), capture_output=True, text=True, cwd=cwd, input=input,
                          timeout=timeout)


def one_line_error(p):
    return p.returncode == 2 and p.stderr.count("\n") == 1 and "Traceback" not in p.stderr


# --- logs ----------------------------------------------------------------------------------------------------

@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=4096))
def test_arbitrary_bytes_give_a_diagnosis_or_an_input_error(tmp_path, data):
    p = tmp_path / "x.log"
    p.write_bytes(data)
    try:
        d = diagnose([str(p)])
    except InputError:
        return
    assert d.cls and d.to_json()["class"] == d.cls


MARKER_LINES = [b"Received 1 death signal, shutting down workers", b"[rank3]: torch.OutOfMemoryError: CUDA out of memory",
                b"failed (exitcode: -9) local_rank: 1 (pid: 7)", b"Sending process 9 closing signal SIGTERM",
                b"  exitcode  : -15 (pid: 9)", b"Root Cause (first observed failure):", b"KeyError: 'x'",
                b"\x1b[31mNCCL error\x1b[0m", b"\r 50%|#  | 5/10 [00:01<00:01, 1.0it/s]Killed"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.one_of(st.sampled_from(MARKER_LINES), st.binary(max_size=80)), max_size=40),
       st.sampled_from([b"\n", b"\r\n", b"\r"]))
def test_marker_soup_never_crashes_the_classifier(tmp_path, parts, sep):
    p = tmp_path / "soup.log"
    p.write_bytes(sep.join(parts))
    try:
        diagnose([str(p)])
    except InputError:
        pass


def _peak_rss_mb(args, cwd=None):
    code = ("import resource, sys\nfrom oomfix.cli import main\n"
            "try:\n    main(sys.argv[1:], standalone_mode=False)\nexcept SystemExit:\n    pass\n"
            # VmHWM, the peak of this process's own memory: ru_maxrss also counts the pytest process it was forked from
            # (Linux carries the pre-exec peak across execve), which made this figure depend on the tests run before
            "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM:')][0].split()[1]\n"
            "print('RSS', int(hwm) // 1024, file=sys.stderr)\n")
    p = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=cwd, timeout=600)
    rss = int(p.stderr.rsplit("RSS", 1)[1].split()[0])
    return p, rss


def test_200mb_line_without_newline_is_bounded(tmp_path):
    p = tmp_path / "one_line.log"
    with open(p, "wb") as f:
        chunk = b"0123456789abcdef" * 65536  # 1 MiB
        for i in range(200):
            f.write(chunk)
            if i == 150:
                f.write(b" Received 1 death signal, shutting down workers ")
    proc, rss = _peak_rss_mb(["diagnose", "--format", "json", str(p)])
    assert json.loads(proc.stdout)["class"] == "sighup"
    print(f"200 MB single line: peak RSS {rss} MB")
    assert rss < 150


def test_carriage_return_only_log(tmp_path):
    p = tmp_path / "cr.log"
    p.write_bytes(b"\r".join(f" {i}%|#| {i}/100 [00:0{i % 10}<00:10, 1.0it/s]".encode() for i in range(100))
                  + b"\rKilled\r")
    d = diagnose([str(p)])
    assert d.cls == "host_oom" and d.confidence == "low" and d.root_cause.line == 1


@pytest.mark.parametrize("setup,expect", [
    ("empty", "none"), ("dir", 2), ("missing", 2), ("fifo", "none"), ("truncated_gz", 2), ("binary", 2),
])
def test_odd_inputs(tmp_path, setup, expect):
    p = tmp_path / "in.log"
    if setup == "empty":
        p.write_bytes(b"")
    elif setup == "dir":
        p.mkdir()
    elif setup == "fifo":
        os.mkfifo(p)
    elif setup == "truncated_gz":
        blob = gzip.compress(os.urandom(1 << 20).hex().encode())
        p.write_bytes(blob[: len(blob) // 3])
    elif setup == "binary":
        p.write_bytes(os.urandom(1 << 16))
    r = cli("diagnose", "--format", "json", str(p), timeout=30)
    if expect == 2:
        assert one_line_error(r), r.stderr
    else:
        assert r.returncode == 0 and json.loads(r.stdout)["class"] == expect


# --- configs -------------------------------------------------------------------------------------------------

PROJECT_LOG = make.cuda_oom_rank2("configs/a.yaml", micro=2, accum=8)
GOOD = "stage: sft\nmodel_name_or_path: m\nper_device_train_batch_size: 2\ngradient_accumulation_steps: 8\n"


def project(tmp_path, config_bytes, name="configs/a.yaml"):
    root = tmp_path / "proj"
    (root / "configs").mkdir(parents=True)
    (root / name).write_bytes(config_bytes)
    (root / "train.log").write_text(PROJECT_LOG.replace("configs/a.yaml", name))
    return root


def _bomb():
    lines = ['a0: &a0 ["x","x","x","x","x","x","x","x","x"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    return ("stage: sft\nper_device_train_batch_size: 2\ngradient_accumulation_steps: 8\n" + "\n".join(lines) + "\n")


HOSTILE = {
    "alias_bomb": _bomb().encode(),
    "python_tag": b"stage: sft\nx: !!python/object/apply:os.system ['touch /tmp/oomfix-pwned']\n"
                  b"per_device_train_batch_size: 2\ngradient_accumulation_steps: 8\n",
    "duplicate_keys": (GOOD + "per_device_train_batch_size: 4\n").encode(),
    "alias_on_value": b"stage: sft\nbase: &mb 2\nper_device_train_batch_size: *mb\ngradient_accumulation_steps: 8\n",
    "anchor_on_value": b"stage: sft\nper_device_train_batch_size: &mb 2\neval: *mb\ngradient_accumulation_steps: 8\n",
    "non_utf8": GOOD.encode() + b"# caf\xe9\n",
    "deep_nesting": (GOOD + "x: " + "[" * 5000 + "]" * 5000 + "\n").encode(),
    "tabs": b"stage: sft\nper_device_train_batch_size:\t2\ngradient_accumulation_steps: 8\n\tbad: 1\n",
}
EDITABLE = {
    "bom": ("\ufeff" + GOOD).encode(),
    "crlf": GOOD.replace("\n", "\r\n").encode(),
    "mixed_endings": b"stage: sft\r\nmodel_name_or_path: m\nper_device_train_batch_size: 2\r\n"
                     b"gradient_accumulation_steps: 8\n",
    "interpolation": (GOOD + "output_dir: ${oc.env:HOME}/out\n").encode(),
    "merge_keys": (b"stage: sft\nbase: &b {lr: 1.0e-5}\nopt:\n  <<: *b\n  wd: 0.1\n"
                   b"per_device_train_batch_size: 2\ngradient_accumulation_steps: 8\n"),
}


@pytest.mark.parametrize("case", [pytest.param(c, marks=pytest.mark.slow) if c == "deep_nesting" else c  # 5000 levels
                                  for c in sorted(HOSTILE)])
def test_hostile_config_is_refused_and_left_byte_identical(tmp_path, case):
    root = project(tmp_path, HOSTILE[case])
    r = cli("apply", "train.log", "--write", cwd=root, timeout=60)
    assert one_line_error(r), (r.returncode, r.stdout, r.stderr)
    assert (root / "configs/a.yaml").read_bytes() == HOSTILE[case]
    assert not Path("/tmp/oomfix-pwned").exists()
    assert not (root / ".oomfix" / "journal.jsonl").exists()


@pytest.mark.parametrize("case", sorted(EDITABLE))
def test_awkward_but_valid_config_gets_a_surgical_edit(tmp_path, case):
    raw = EDITABLE[case]
    root = project(tmp_path, raw)
    r = cli("apply", "train.log", "--write", cwd=root, timeout=60)
    assert r.returncode == 0, r.stderr
    out = (root / "configs/a.yaml").read_bytes()
    assert out == raw.replace(b"per_device_train_batch_size: 2", b"per_device_train_batch_size: 1") \
        .replace(b"gradient_accumulation_steps: 8", b"gradient_accumulation_steps: 16")


def test_fifty_megabyte_config_is_refused_fast(tmp_path):
    big = GOOD.encode() + b"# " + b"x" * (50 << 20) + b"\n"
    root = project(tmp_path, big)
    t = time.time()
    r = cli("apply", "train.log", "--write", cwd=root, timeout=60)
    assert one_line_error(r) and "too large" in r.stderr and time.time() - t < 10


def test_symlinked_config_edits_the_target_and_keeps_the_link(tmp_path):
    root = project(tmp_path, GOOD.encode(), name="configs/real.yaml")
    (root / "configs/a.yaml").symlink_to("real.yaml")
    (root / "train.log").write_text(PROJECT_LOG)
    r = cli("apply", "train.log", "--write", cwd=root)
    assert r.returncode == 0, r.stderr
    assert (root / "configs/a.yaml").is_symlink()
    assert b"per_device_train_batch_size: 1" in (root / "configs/real.yaml").read_bytes()
    assert cli("undo", cwd=root).returncode == 0
    assert (root / "configs/real.yaml").read_bytes() == GOOD.encode()


def test_read_only_config_is_refused(tmp_path):
    root = project(tmp_path, GOOD.encode())
    os.chmod(root / "configs/a.yaml", 0o444)
    r = cli("apply", "train.log", "--write", cwd=root)
    assert one_line_error(r) and "read-only" in r.stderr
    assert (root / "configs/a.yaml").read_bytes() == GOOD.encode()


def test_config_outside_the_tree_is_refused_unless_named(tmp_path):
    outside = tmp_path / "elsewhere" / "a.yaml"
    outside.parent.mkdir()
    outside.write_text(GOOD)
    root = tmp_path / "proj"
    root.mkdir()
    (root / "train.log").write_text(PROJECT_LOG.replace("configs/a.yaml", str(outside)))
    r = cli("apply", "train.log", "--write", cwd=root)
    assert one_line_error(r) and "outside the directory tree" in r.stderr
    assert outside.read_text() == GOOD
    r = cli("apply", "train.log", "--write", "--config", str(outside), cwd=root)
    assert r.returncode == 0 and "per_device_train_batch_size: 1" in outside.read_text()


def test_full_disk_leaves_the_original_intact(tmp_path, monkeypatch):
    from oomfix import journal

    target = tmp_path / "a.yaml"
    target.write_text(GOOD)
    real_fdopen = os.fdopen

    class Full:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *a):
            self.f.close()

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(journal.os, "fdopen", lambda fd, mode: Full(real_fdopen(fd, mode)))
    with pytest.raises(journal.JournalError, match="no space left on device"):
        journal.atomic_write(str(target), b"new")
    assert target.read_text() == GOOD
    assert [p.name for p in tmp_path.iterdir()] == ["a.yaml"]  # no temp file left behind


# keys YAML 1.1 reads as booleans or null ("on", "y", "no") are not strings to PyYAML: the editor refuses those
_KEY = st.from_regex(r"[a-z][a-z_]{0,8}", fullmatch=True).filter(
    lambda k: k not in {"y", "n", "yes", "no", "on", "off", "true", "false", "null"})
_SCALAR = st.one_of(st.integers(-1000, 1000), st.sampled_from(["x", "a b", "1.0e-5", "no", "yes", "null", "~"]),
                    st.booleans())


def _render(v, quote):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    return {"plain": v if v not in ("no", "yes", "null", "~", "1.0e-5") else f'"{v}"',
            "single": f"'{v}'", "double": f'"{v}"'}[quote]


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(_KEY, st.tuples(_SCALAR, st.sampled_from(["plain", "single", "double"]),
                                       st.sampled_from(["", "  # c", " #x"]), st.booleans()), min_size=1, max_size=12),
       st.sampled_from(["\n", "\r\n"]), st.integers(0, 11), st.integers(0, 99))
def test_editing_one_scalar_changes_exactly_that_scalar(doc, nl, which, new):
    lines = ["# header"]
    for k, (v, q, comment, blank) in doc.items():
        if blank:
            lines.append("")
        lines.append(f"{k}: {_render(v, q)}{comment}")
    text = nl.join(lines) + nl
    key = list(doc)[which % len(doc)]
    assume(doc[key][0] != new or isinstance(doc[key][0], bool))
    out = edit_text(text, "g.yaml", [ValueEdit((key,), new)])
    before, after = load_yaml_safely(text, "g"), load_yaml_safely(out, "g")
    assert after == {**before, key: new}
    changed = [(a, b) for a, b in zip(text.split(nl), out.split(nl)) if a != b]
    assert len(changed) == 1 and changed[0][0].startswith(f"{key}:")
    old_line, new_line = changed[0]
    assert old_line.split(":", 1)[1].endswith(doc[key][2]) and new_line.endswith(doc[key][2] or str(new))


# --- crashes and concurrency --------------------------------------------------------------------------------------

SIBLING = """\
### model
model_name_or_path: Qwen/Qwen3-14B
stage: sft
finetuning_type: full

### train
per_device_train_batch_size: 2   # tuned
gradient_accumulation_steps: 8
output_dir: saves/job_{i:03d}
"""


def big_tree(root, n=200):
    (root / "configs").mkdir(parents=True)
    for i in range(n):
        (root / f"configs/job_{i:03d}.yaml").write_text(SIBLING.format(i=i))
    (root / "train.log").write_text(make.cuda_oom_rank2("configs/job_000.yaml", micro=2, accum=8))
    return {p: p.read_bytes() for p in sorted((root / "configs").iterdir())}


def _apply_proc(root):
    return subprocess.Popen(oomfix_cmd() + ["apply", "train.log", "--all-configs", "--write"], cwd=root,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _journal_claims(root):
    path = root / ".oomfix" / "journal.jsonl"
    if not path.exists():
        return {}, []
    recs = []
    for line in path.read_text().splitlines():
        try:
            recs.append(json.loads(line))
        except json.JSONDecodeError:
            assert line is path.read_text().splitlines()[-1], "only a torn LAST line is acceptable"
    begins = {r["tx"]: r for r in recs if r["event"] == "begin"}
    return begins, recs


@pytest.mark.slow  # the kill loop: minutes on a busy machine
def test_sigkill_at_random_moments_never_leaves_a_mixed_file(tmp_path):
    rng = random.Random(1234)
    base = tmp_path / "base"
    originals = big_tree(base)
    new_of = {p.name: p.read_bytes().replace(b"per_device_train_batch_size: 2", b"per_device_train_batch_size: 1")
              .replace(b"gradient_accumulation_steps: 8", b"gradient_accumulation_steps: 16") for p in originals}
    t0 = time.time()
    subprocess.run(oomfix_cmd() + ["apply", "train.log", "--all-configs", "--write"], cwd=base, check=True,
                   capture_output=True)
    full = time.time() - t0
    killed_mid_write = 0
    for it in range(KILL_ITERATIONS):
        root = tmp_path / f"run{it}"
        shutil.copytree(base, root, ignore=shutil.ignore_patterns(".oomfix"))
        for p, data in originals.items():
            (root / "configs" / p.name).write_bytes(data)
        proc = _apply_proc(root)
        if it % 2:
            time.sleep(rng.uniform(0.05, full * 1.1))  # anywhere: planning, backups, writes, journal
        else:
            # aim at the write phase: it starts when the backups directory appears
            deadline = time.time() + 30
            while not (root / ".oomfix" / "backups").exists() and proc.poll() is None and time.time() < deadline:
                time.sleep(0.002)
            time.sleep(rng.uniform(0, full / 3))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        states = {}
        for p in originals:
            cur = (root / "configs" / p.name).read_bytes()
            assert cur in (originals[p], new_of[p.name]), f"{p.name} is neither old nor new after a SIGKILL"
            states[p.name] = cur == new_of[p.name]
        begins, recs = _journal_claims(root)
        for r in recs:
            if r["event"] == "written":
                name = Path(r["file"]).name
                assert states[name], f"the journal claims {name} was written, but it was not"
        if any(states.values()) and not all(states.values()):
            killed_mid_write += 1
        if (root / ".oomfix" / "journal.jsonl").exists():
            u = subprocess.run(oomfix_cmd() + ["undo"], cwd=root, capture_output=True, text=True)
            assert u.returncode == 0 or "nothing to undo" in u.stderr, u.stderr
            for p in originals:
                assert (root / "configs" / p.name).read_bytes() == originals[p]
            # undo also sweeps the temp file a kill may leave beside a config
            assert not [p.name for p in (root / "configs").iterdir() if p.name.startswith(".oomfix-")]
        shutil.rmtree(root)
    print(f"{KILL_ITERATIONS} SIGKILLs, {killed_mid_write} landed between two file writes; all files whole")


def test_two_concurrent_applies_one_wins_no_lost_update(tmp_path):
    originals = big_tree(tmp_path / "t", n=50)
    root = tmp_path / "t"
    a, b = _apply_proc(root), _apply_proc(root)
    outs = [p.communicate(timeout=120) for p in (a, b)]
    assert a.returncode == 0 and b.returncode == 0, outs
    begins, recs = _journal_claims(root)
    committed = [r for r in recs if r["event"] == "commit"]
    assert len(committed) == 1
    assert sum(b"already applied" in o[0] for o in outs) == 1
    for p in originals:
        assert b"per_device_train_batch_size: 1" in p.read_bytes()


def _wait_for_the_engine(proc, limit=10.0):
    """Until the process has loaded a YAML C extension (oomfix is then planning), or it ended, or `limit` passed."""
    deadline = time.time() + limit
    while proc.poll() is None and time.time() < deadline:
        try:
            if "_yaml" in Path(f"/proc/{proc.pid}/maps").read_text():
                return
        except OSError:
            return  # no /proc: fall back to the sleep alone
        time.sleep(0.005)


@pytest.mark.slow  # a kill loop: 12 interrupted applies of 200 configs
def test_ctrl_c_during_apply_dies_of_sigint_and_leaves_nothing_half_written(tmp_path):
    rng = random.Random(7)
    originals = big_tree(tmp_path / "t")
    root = tmp_path / "t"
    seen = []
    for it in range(12):
        proc = _apply_proc(root)
        if it % 2:
            _wait_for_the_engine(proc)  # a SIGINT inside Python's own start-up is Python's to report
            time.sleep(rng.uniform(0, 0.3))  # while planning
        else:
            deadline = time.time() + 30  # while writing: the backups directory appears first
            while not (root / ".oomfix" / "backups").exists() and proc.poll() is None and time.time() < deadline:
                time.sleep(0.002)
            time.sleep(rng.uniform(0, 0.05))
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        seen.append(proc.returncode)
        assert proc.returncode in (0, -signal.SIGINT), err  # dies of SIGINT after cleanup: the shell sees 130
        assert b"Traceback" not in err
        states = [p.read_bytes() == originals[p] for p in originals]
        assert all(states) or not any(states), "an interrupted apply left a mix of old and new files"
        if not all(states):
            assert subprocess.run(oomfix_cmd() + ["undo"], cwd=root, capture_output=True).returncode == 0
        shutil.rmtree(root / ".oomfix", ignore_errors=True)
    print(f"Ctrl-C: exit codes {seen}")
    assert -signal.SIGINT in seen


def test_oomfix_never_executes_what_it_reads(tmp_path):
    marker = tmp_path / "executed"
    (tmp_path / "launch.sh").write_text(f"touch {marker}\nnohup torchrun t.py > a.log &\n")
    (tmp_path / "wrapper.py").write_text(f"open({str(marker)!r}, 'w')\nimport subprocess\n"
                                         "subprocess.run(['torchrun', 't.py'])\n")
    (tmp_path / "l2.sh").write_text("nohup python wrapper.py > b.log &\n")
    (tmp_path / "a.log").write_text(f"$(touch {marker})\nReceived 1 death signal, shutting down workers\n")
    cli("check", cwd=tmp_path)
    cli("diagnose", "a.log", cwd=tmp_path)
    cli("apply", "a.log", "--write", cwd=tmp_path)
    assert not marker.exists()


def test_catastrophic_user_regex_cannot_hang_a_run(tmp_path):
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "slow.yaml").write_text(textwrap.dedent("""\
        class: cuda_error
        title: slow
        meaning: slow
        patterns:
          - id: evil-backtracking
            markers: ["aaaa"]
            regex: "(a|a)+$"
    """))
    (tmp_path / "x.log").write_text("a" * 40 + "b\n" * 3)
    t = time.time()
    r = cli("diagnose", "--format", "json", "--rules", str(tmp_path / "rules"), str(tmp_path / "x.log"))
    assert r.returncode == 0 and time.time() - t < 10
    assert any("evil-backtracking" in w for w in json.loads(r.stdout)["warnings"])
