import os
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
FIXTURES = ROOT / "fixtures"
DEMO = ROOT / "oomfix" / "demo_data"


def pytest_addoption(parser):
    parser.addoption("--regen-golden", action="store_true", default=False,
                     help="rewrite the *.expected.json golden files from the current output")


def pytest_collection_modifyitems(config, items):
    """The slow tier (`-m "not slow"` leaves it out; CI runs it): tests marked `slow` by hand (kill loops, the
    corpus scorers), and every test that starts a genuine torchrun (the `torchrun` fixture of test_supervise.py)."""
    for item in items:
        if "torchrun" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def regen(request):
    return request.config.getoption("--regen-golden") or os.environ.get("OOMFIX_REGEN") == "1"


@pytest.fixture
def in_root(monkeypatch):
    monkeypatch.chdir(ROOT)
    return ROOT


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A copy of the bundled demo project (two LLaMA-Factory siblings; job_a died of a CUDA OOM, job_b of a SIGHUP),
    the current directory for the test. Modules that need another project define their own."""
    dst = tmp_path / "proj"
    shutil.copytree(DEMO, dst)
    monkeypatch.chdir(dst)
    return dst


def shared_or_skip(path):
    """The shared corpus must be there in CI (a missing one would hide a broken test); locally it may be absent."""
    if path.exists():
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{path} is missing; CI must have ../shared beside the project")
    pytest.skip(f"{path} not present")


def oomfix_cmd():
    return [sys.executable, "-m", "oomfix"]


# CI runs the property tests with a fixed seed: a red build must be reproducible, not a lottery
try:
    from hypothesis import settings as _hsettings

    _hsettings.register_profile("ci", derandomize=True, print_blob=True)
    if os.environ.get("CI") == "true":
        _hsettings.load_profile("ci")
except ImportError:  # pragma: no cover
    pass


@pytest.fixture(params=["hyperscan", "python"])
def engine(request, monkeypatch):
    """Each engine in turn, chosen as a user does (OOMFIX_ENGINE), for what `default_prefilter` and so
    `oomfix.diagnose` use; the Hyperscan case is skipped where its wheel is not installed."""
    from oomfix import reader

    if request.param == "hyperscan":
        pytest.importorskip("hyperscan")
        monkeypatch.delenv("OOMFIX_ENGINE", raising=False)
    else:
        monkeypatch.setenv("OOMFIX_ENGINE", "python")
    reader.default_prefilter.cache_clear()
    assert reader.default_prefilter().name == request.param
    yield request.param
    reader.default_prefilter.cache_clear()
