import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
FIXTURES = ROOT / "fixtures"


def pytest_addoption(parser):
    parser.addoption("--regen-golden", action="store_true", default=False,
                     help="rewrite the *.expected.json golden files from the current output")


@pytest.fixture
def regen(request):
    return request.config.getoption("--regen-golden") or os.environ.get("OOMFIX_REGEN") == "1"


@pytest.fixture
def in_root(monkeypatch):
    monkeypatch.chdir(ROOT)
    return ROOT


def oomfix_cmd():
    return [sys.executable, "-m", "oomfix"]
