"""Golden files: every fixture log next to the diagnosis it must produce.

Regenerate after an intended change with `pytest tests/test_classify_golden.py --regen-golden` and review the diff.
"""
import json

import pytest

from conftest import FIXTURES, ROOT
from oomfix.diagnose import diagnose_logs
from oomfix.reader import Prefilter

LOGS = sorted(p for p in FIXTURES.glob("*/*.log") if p.parent.name in ("torchrun", "constructed"))
JOBS = [[p] for p in LOGS] + [sorted((FIXTURES / "constructed" / "multinode").iterdir())]


def _expected_path(job):
    first = job[0]
    return first.parent / ("job.expected.json" if len(job) > 1 else first.name.replace(".log", ".expected.json"))


@pytest.mark.parametrize("job", JOBS, ids=lambda j: "+".join(p.name for p in j))
def test_golden(job, regen, in_root):
    rel = [str(p.relative_to(ROOT)) for p in job]
    got = diagnose_logs(rel).to_json()
    exp_path = _expected_path(job)
    if regen or not exp_path.exists():
        exp_path.write_text(json.dumps(got, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    assert got == json.loads(exp_path.read_text(encoding="utf-8"))


@pytest.mark.parametrize("job", JOBS, ids=lambda j: "+".join(p.name for p in j))
def test_pure_python_prefilter_gives_the_same_diagnosis(job, in_root):
    rel = [str(p.relative_to(ROOT)) for p in job]
    assert diagnose_logs(rel, prefilter=Prefilter()).to_json() == diagnose_logs(rel).to_json()
