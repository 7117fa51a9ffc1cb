"""Start-up stays light: `--version` and `diagnose` import only what they use (timing lives in the benchmark)."""
import subprocess
import sys

from conftest import FIXTURES


def _modules(*args):
    code = ("import sys\nfrom oomfix.cli import main\n"
            "try:\n    main(sys.argv[1:], standalone_mode=False)\nexcept SystemExit:\n    pass\n"
            "print('\\n'.join(sorted(sys.modules)), file=sys.stderr)\n")
    p = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    return set(p.stderr.split())


def test_version_imports_no_engine():
    mods = _modules("--version")
    assert not mods & {"yaml", "ruamel.yaml", "oomfix.rules", "oomfix.classify", "hyperscan", "regex"}


def test_diagnose_imports_neither_the_editor_nor_ruamel():
    mods = _modules("diagnose", str(FIXTURES / "constructed" / "lf_sighup.log"))
    assert "oomfix.classify" in mods
    assert not mods & {"ruamel.yaml", "oomfix.editor", "oomfix.apply", "oomfix.check", "oomfix.configs"}
