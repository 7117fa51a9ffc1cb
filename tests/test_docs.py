"""README cannot drift from the CLI: every command and option is documented (after sqlite-utils' test_docs)."""
from pathlib import Path

import click
import pytest

from oomfix.cli import main

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()
COMMANDS = sorted(main.commands)


@pytest.mark.parametrize("name", COMMANDS)
def test_command_is_documented(name):
    assert f"oomfix {name}" in README


@pytest.mark.parametrize("name,opt", [(n, o) for n in COMMANDS for p in main.commands[n].params
                                      if isinstance(p, click.Option) for o in p.opts if o.startswith("--")])
def test_option_is_documented(name, opt):
    assert opt in README, f"oomfix {name} {opt} is not in README.md"
