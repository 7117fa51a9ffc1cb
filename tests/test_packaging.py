"""The wheel carries rules/ (as oomfix/rules_data) and the demo project, and finds them once installed."""
import os
import subprocess
import sys
import zipfile

from conftest import ROOT


def test_installed_wheel_finds_rules_and_demo(tmp_path):
    out = tmp_path / "wheel"
    p = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out),
                        str(ROOT)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    (whl,) = out.glob("oomfix-*.whl")
    site = tmp_path / "site"
    with zipfile.ZipFile(whl) as z:
        names = set(z.namelist())
        z.extractall(site)
    assert "oomfix/rules_data/cuda_oom.yaml" in names
    assert "oomfix/demo_data/configs/qwen3_14b_a.yaml" in names and "oomfix/demo_data/logs/job_a.log" in names
    code = ("from oomfix.rules import builtin_rules_dir, load_rules; import oomfix.demo as d; "
            "print(builtin_rules_dir()); print(len(load_rules().classes)); print(d.DATA.is_dir())")
    env = dict(os.environ, PYTHONPATH=str(site))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.split()
    assert lines[0].startswith(str(site)) and lines[1] == "14" and lines[2] == "True"
