"""Every command documents itself: help text, help on every option, and a README section."""

from __future__ import annotations

import pytest
import typer.main

from audit.cli.app import _register_commands, app
from audit.errors import ExitCode
from tests.cli_helper import audit_cli
from tests.paths import REPO

_register_commands()
COMMAND = typer.main.get_command(app)
NAMES = sorted(COMMAND.commands)  # type: ignore[attr-defined]


def test_the_core_commands_exist():
    assert {"crawl", "embed", "index", "search"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_command_has_help_and_every_option_is_documented(name):
    cmd = COMMAND.commands[name]  # type: ignore[attr-defined]
    assert cmd.help and len(cmd.help.strip()) > 20, f"{name} has no help text"
    for param in cmd.params:
        if getattr(param, "param_type_name", "") == "option" and param.name != "help":
            assert param.help, f"{name} {param.opts} has no help"
    readme = (REPO / "README.md").read_text()
    assert f"### `audit {name}" in readme, f"README has no section for audit {name}"


def test_top_level_help_lists_commands():
    res = audit_cli("--help")
    for name in NAMES:
        assert name in res.stdout


def test_version_and_unknown_command():
    assert audit_cli("--version").stdout.startswith("audit ")
    bad = audit_cli("no-such-command", expected=ExitCode.USAGE)
    assert "Traceback" not in bad.stderr
