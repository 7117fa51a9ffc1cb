"""The documented Python API, used the way a script would: only names exported by `oomfix` itself."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

import oomfix

DEMO = Path(oomfix.__file__).resolve().parent / "demo_data"


def test_diagnose_returns_the_frozen_diagnosis(project):
    d = oomfix.diagnose("logs/job_a.log")
    assert isinstance(d, oomfix.Diagnosis) and d.cls == "cuda_oom" and d.is_memory
    assert isinstance(d.root_cause, oomfix.RootCause) and d.root_cause.rank == 2
    assert all(isinstance(e, oomfix.Evidence) for e in d.evidence)
    assert isinstance(d.run, oomfix.RunParams) and d.run.world_size == 4
    assert isinstance(d.memory, oomfix.MemoryInfo) and d.memory.requested_gib == 3.2
    with pytest.raises(AttributeError):
        d.cls = "none"  # frozen
    assert oomfix.diagnose(["logs/job_b.log"]).cls == "sighup"
    json.dumps(d.to_json())


def test_plan_apply_is_a_dry_run_and_write_plan_writes_it(project):
    before = (project / "configs/qwen3_14b_a.yaml").read_bytes()
    plan = oomfix.plan_apply("logs/job_a.log", all_configs=True)
    assert isinstance(plan, oomfix.Plan) and plan.status == "edits" and plan.exit_code == 0
    assert (project / "configs/qwen3_14b_a.yaml").read_bytes() == before
    assert len(plan.edits) == 2 and all(isinstance(e, oomfix.FileEdit) for e in plan.edits)
    j = plan.to_json()  # QA pass: README promised a to_json() on every result; Plan had none
    assert j["status"] == "edits" and not j["written"] and len(j["edits"]) == 2 and "schema_version" not in j
    json.dumps(j)
    tx = oomfix.write_plan(plan)
    assert tx and "ds_z3_config.json" in (project / "configs/qwen3_14b_a.yaml").read_text()
    assert plan.to_json(written=True, transaction=tx)["transaction"] == tx
    assert oomfix.plan_apply("logs/job_a.log").status == "already"


def test_check_returns_findings(project):
    res = oomfix.check()
    assert isinstance(res, oomfix.CheckResult) and res.exit_code() == 1
    # the demo's job_a config still has the values its OOM log shows (content decides, not the copy's file times)
    assert {f.id for f in res.findings} == {"unprotected-launch", "unremediated-failure"}
    assert all(isinstance(f, oomfix.Finding) for f in res.findings)
    assert oomfix.check(["configs"]).exit_code() == 0


def test_jobs_reads_a_launcher_without_running_it(project):
    js = oomfix.jobs("launch.sh")
    assert [j.kind for j in js] == ["llamafactory-cli", "llamafactory-cli"]
    assert all(isinstance(j, oomfix.Job) for j in js) and js[0].nohup and js[0].protected_by is None
    assert oomfix.jobs(["launch.sh", Path("launch.sh")])[2].config == js[0].config


def test_errors_are_the_documented_classes(project):
    with pytest.raises(oomfix.InputError):
        oomfix.diagnose("nope.log")
    with pytest.raises(oomfix.UsageError):
        oomfix.diagnose([])
    with pytest.raises(oomfix.OomfixError):
        oomfix.jobs("nope.sh")
    assert issubclass(oomfix.ConfigError, oomfix.InputError)


def test_the_api_survives_importing_the_submodules_of_the_same_name():
    import oomfix.check  # noqa: F401  (binds nothing over the function)
    import oomfix.diagnose  # noqa: F401

    assert callable(oomfix.check) and callable(oomfix.diagnose)
    assert set(oomfix.__all__) <= set(dir(oomfix))


def test_import_oomfix_is_cheap():
    code = "import sys, oomfix; print(' '.join(sorted(m for m in sys.modules if m.startswith(('oomfix', 'yaml', " \
           "'ruamel', 'click', 'regex', 'hyperscan')))))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["oomfix"]


def test_every_api_function_is_typed_and_documented():
    import inspect

    for name in ("diagnose", "plan_apply", "write_plan", "check", "jobs"):
        fn = getattr(oomfix, name)
        assert fn.__doc__ and len(fn.__doc__) > 100, name
        sig = inspect.signature(fn)
        assert sig.return_annotation is not inspect.Signature.empty, name
        assert all(p.annotation is not inspect.Parameter.empty for p in sig.parameters.values()), name
