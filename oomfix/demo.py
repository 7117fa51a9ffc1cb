"""`oomfix demo`: the user's story on a bundled example project, in a temporary directory.

Two sibling LLaMA-Factory configs for Qwen3-14B, started side by side by one launcher script; one job died of a
CUDA OOM on rank 2, the other of a SIGHUP when the SSH terminal closed. The demo shows what a newcomer would run.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from collections.abc import Iterator

DATA = Path(__file__).resolve().parent / "demo_data"


@contextmanager
def _cwd(path: Path) -> Iterator[None]:
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def run_demo(echo: Callable[[str], None], keep: str | None = None) -> str:
    """Run the story; returns the project directory (a temporary one unless `keep` names one)."""
    from oomfix.apply import plan_apply, write_plan
    from oomfix.check import render_text, run_check
    from oomfix.diagnose import diagnose_logs
    from oomfix.report import Style, render_diagnosis_text, render_plan_text

    root = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="oomfix-demo-"))
    if keep and root.exists() and any(root.iterdir()):
        from oomfix.errors import UsageError

        raise UsageError(f"{root}: not empty; give an empty or new directory")
    shutil.copytree(DATA, root, dirs_exist_ok=True)
    style = Style()

    def step(title: str, cmd: str) -> None:
        echo("")
        echo(style.bold(f"== {title}"))
        echo(style.dim(f"$ cd {root} && {cmd}"))

    with _cwd(root):
        echo(f"Example project written to {root}: launch.sh starts two 4-GPU LLaMA-Factory jobs "
             f"(configs/qwen3_14b_a.yaml, configs/qwen3_14b_b.yaml); both died (logs/).")
        step("1. What killed job A?", "oomfix diagnose logs/job_a.log")
        echo(render_diagnosis_text(diagnose_logs(["logs/job_a.log"]), style).rstrip())
        step("2. What killed job B? (not memory: do not touch its batch size)", "oomfix diagnose logs/job_b.log")
        echo(render_diagnosis_text(diagnose_logs(["logs/job_b.log"]), style).rstrip())
        step("3. Before the relaunch: the pre-relaunch check fails", "oomfix check")
        echo(render_text(run_check(["."])).rstrip())
        step("4. The OOM fix for BOTH siblings, as a dry run", "oomfix apply logs/job_a.log --all-configs")
        plan = plan_apply("logs/job_a.log", all_configs=True)
        echo(render_plan_text(plan, False, style).rstrip())
        step("5. Write it (atomic, journalled; `oomfix undo` reverts)", "oomfix apply logs/job_a.log --all-configs --write")
        write_plan(plan)
        echo(f"written: {', '.join(e.path for e in plan.edits)}")
        step("6. The SIGHUP fix goes into the launcher, not the configs", "oomfix apply logs/job_b.log --write")
        plan_b = plan_apply("logs/job_b.log")
        write_plan(plan_b)
        echo(render_plan_text(plan_b, True, style).rstrip())
        step("7. Check again", "oomfix check")
        res = run_check(["."])
        echo(render_text(res).rstrip())
        step("8. Applying the same log twice changes nothing", "oomfix apply logs/job_a.log --all-configs --write")
        echo(plan_apply("logs/job_a.log", all_configs=True).message or "")
    echo("")
    echo(style.bold("== Next time: let oomfix run the job and do steps 1-5 itself"))
    echo("$ CUDA_VISIBLE_DEVICES=0,1,2,3 oomfix run --all-configs -- llamafactory-cli train configs/qwen3_14b_a.yaml")
    echo("  runs it shielded from the terminal (its own session, a log per attempt); on an OOM it applies the next "
         "rung and relaunches, until it trains. `oomfix runs` lists the attempts.")
    echo("")
    echo(f"Project left in {root} (try `cd {root} && oomfix undo`).")
    return str(root)
