"""Hostile launchers (issue 23, the launcher reader's part): scripts and files built to make the reader run for
minutes, fill memory or block. Each runs `oomfix jobs` / `oomfix check` in a child process with a wall-clock limit
and an address-space limit, and must end fast with a clear answer: exit 2 and one line for `jobs` on a script it
refuses, a `skipped-file` warning for `check`, or a reading with the runaway value unknown. All inputs constructed."""
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIMIT_S = 20
AS_BYTES = 2 << 30  # the whole child, interpreter and libraries included


def _limit() -> None:  # pragma: no cover - runs in the child
    resource.setrlimit(resource.RLIMIT_AS, (AS_BYTES, AS_BYTES))


def oomfix(cwd, *args):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    t = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "oomfix", *args], cwd=cwd, capture_output=True, text=True,
                       timeout=LIMIT_S, preexec_fn=_limit, env=env)
    return p, time.monotonic() - t


def _alias_bomb(levels=9):
    out = 'a: &a ["x","x","x","x","x","x","x","x","x"]\n'
    for i in range(1, levels + 1):
        prev, cur = chr(96 + i), chr(97 + i)
        out += f"{cur}: &{cur} [" + ",".join(f"*{prev}" for _ in range(9)) + "]\n"
    return out


SCRIPTS = {
    # each expansion multiplies the value by ten: 10^12 characters if built
    "subst.sh": "A=a\n" + "A=${A//a/aaaaaaaaaa}\n" * 12 + "torchrun t.py > $A.log\n",
    # each line doubles the array: 2^40 elements if built
    "array.sh": "A=(x)\n" + 'A=("${A[@]}" "${A[@]}")\n' * 40 + "torchrun t.py\n",
    # the quadratic suffix strip on a grown value
    "strip.sh": "A=a\n" + "A=$A$A\n" * 24 + "B=${A%%b*}\ntorchrun t.py > $B.log\n",
}


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_runaway_expansions_stay_unknown(tmp_path, name):
    (tmp_path / name).write_text(SCRIPTS[name])
    p, took = oomfix(tmp_path, "jobs", name, "--format", "json")
    assert p.returncode == 0, p.stderr
    assert '"launcher": "torchrun"' in p.stdout and len(p.stdout) < 10_000
    assert took < LIMIT_S


@pytest.mark.parametrize("name,text", [
    ("ifs.sh", "if true; then\n" * 5000 + "torchrun t.py\n" + "fi\n" * 5000),
    ("groups.sh", "{\n" * 5000 + "torchrun t.py\n" + "}\n" * 5000),
    ("subshells.sh", "(\n" * 5000 + "torchrun t.py\n" + ")\n" * 5000),
])
def test_deep_nesting_is_refused_with_exit_2(tmp_path, name, text):
    (tmp_path / name).write_text(text)
    p, took = oomfix(tmp_path, "jobs", name)
    assert p.returncode == 2 and "nested more than" in p.stderr and "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and took < 10
    p, _ = oomfix(tmp_path, "check", ".")
    assert p.returncode == 0 and "[skipped-file]" in p.stdout


def test_special_files_named_like_launchers_configs_and_logs_never_block(tmp_path):
    for name in ("fifo.sh", "fifo.yaml", "fifo.log"):
        os.mkfifo(tmp_path / name)
    for name in ("zero.sh", "zero.yaml", "zero.json", "zero.log"):
        os.symlink("/dev/zero", tmp_path / name)
    p, took = oomfix(tmp_path, "check", ".")
    assert p.returncode == 0 and p.stdout.count("[skipped-file]") == 7 and took < LIMIT_S
    p, _ = oomfix(tmp_path, "jobs", "fifo.sh")
    assert p.returncode == 2 and "not a regular file" in p.stderr
    p, _ = oomfix(tmp_path, "jobs", "zero.sh")
    assert p.returncode == 2 and "not a regular file" in p.stderr


def test_alias_bomb_in_an_accelerate_config_is_not_expanded(tmp_path):
    (tmp_path / "acc.yaml").write_text(_alias_bomb() + "gpu_ids: *j\nnum_processes: *j\n")
    (tmp_path / "l.sh").write_text("accelerate launch --config_file acc.yaml t.py\n")
    p, took = oomfix(tmp_path, "jobs", "l.sh", "--format", "json")
    assert p.returncode == 0 and '"launcher": "accelerate"' in p.stdout and took < LIMIT_S


def test_alias_bomb_in_training_configs_is_never_compared(tmp_path):
    # two alike configs whose datasets are alias bombs: sibling grouping must not walk or compare them
    for n in ("a", "b"):
        (tmp_path / f"{n}.yaml").write_text("model_name_or_path: m\nstage: sft\nper_device_train_batch_size: 1\n"
                                            f"output_dir: o{n}\n" + _alias_bomb().replace("a: &a", "x0: &a") +
                                            "dataset: *j\n")
    p, took = oomfix(tmp_path, "check", ".")
    assert p.returncode in (0, 1, 2) and "Traceback" not in p.stderr and took < LIMIT_S


def test_an_oversized_script_is_refused(tmp_path):
    (tmp_path / "big.sh").write_text("# padding\n" * 500_000)
    p, _ = oomfix(tmp_path, "jobs", "big.sh")
    assert p.returncode == 2 and "too large" in p.stderr


def test_the_time_budget_refuses_a_script_that_reads_too_long(tmp_path, monkeypatch):
    import oomfix.shell
    from oomfix.errors import InputError
    from oomfix.launcher import parse_launcher

    # constructed: a function that calls itself in a loop, read under a budget already spent
    (tmp_path / "slow.sh").write_text("f() { for i in 1 2 3 4 5 6 7 8; do f; done; }\nf\ntorchrun t.py\n")
    monkeypatch.setattr(oomfix.shell, "TIME_BUDGET_S", 0.0)
    with pytest.raises(InputError, match="took over"):
        parse_launcher(tmp_path / "slow.sh")
    monkeypatch.setattr(oomfix.shell, "TIME_BUDGET_S", 10.0)
    assert [j.kind for j in parse_launcher(tmp_path / "slow.sh").jobs] == ["torchrun"]


def test_doubling_an_unknown_value_stays_small():
    from oomfix.shell import walk_script

    # constructed: the unknown value's pieces double with every line; the reader keeps one unknown piece
    t = time.monotonic()
    cmds = walk_script("/r/x.sh", "a=$1\n" + "a=$a$a\n" * 40 + "torchrun t.py > $a.log\n")
    assert time.monotonic() - t < 5 and len(cmds) == 1
