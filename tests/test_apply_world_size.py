"""The world size apply's summary uses (issue 21 item 7d): what the failed run itself printed wins over a reading of
its launcher. Constructed from the bundled demo project: its job_a.log shows `world size: 4` (LLaMA-Factory's
hparams parser line); the launcher is changed to claim two GPUs for that job."""
import json
import shutil
from pathlib import Path

from click.testing import CliRunner

from oomfix.cli import main

DEMO = Path(__file__).resolve().parent.parent / "oomfix" / "demo_data"


def test_the_logs_world_size_wins_over_the_launchers(tmp_path, monkeypatch):
    dst = tmp_path / "proj"
    shutil.copytree(DEMO, dst)
    monkeypatch.chdir(dst)
    lau = dst / "launch.sh"
    lau.write_text(lau.read_text().replace("CUDA_VISIBLE_DEVICES=0,1,2,3 nohup", "CUDA_VISIBLE_DEVICES=0,1 nohup"))
    r = CliRunner().invoke(main, ["apply", "logs/job_a.log", "--format", "json"], catch_exceptions=False)
    out = json.loads(r.output)
    primary = [e for e in out["edits"] if e["file"].endswith("qwen3_14b_a.yaml")]
    assert primary and primary[0]["world_size"] == 4
