"""The test suite's own layout: helpers imported one way, no test module importing another
or ``conftest``, and every ``tests/test_*.py`` named in the code and tests existing.

The one way: helper modules in ``tests/`` (anything not ``test_*.py`` or ``conftest.py``) are
imported as ``from tests.<module> import name`` (see ``tests/__init__.py``). Code handed to a
subprocess as a string is checked too, where it parses as Python.
"""

from __future__ import annotations

import ast
import re
import textwrap
from pathlib import Path

from tests.paths import REPO, TESTS

LOCAL_MODULES = {p.stem for p in TESTS.glob("*.py")}
SUITE_FILES = sorted(TESTS.glob("*.py"))


def _imported_modules(tree: ast.AST):
    """(line, dotted module name) of every import, including those in functions and in string
    constants that are themselves Python (scripts run with ``python -c``)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "tests":  # from tests import legacy_vectors_v1
                yield from ((node.lineno, f"tests.{alias.name}") for alias in node.names)
            else:
                yield node.lineno, node.module
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and "import " in node.value:
            try:
                inner = ast.parse(textwrap.dedent(node.value))
            except SyntaxError:
                continue
            yield from ((node.lineno, name) for _, name in _imported_modules(inner))


def _problems(path: Path) -> list[str]:
    problems = []
    for line, name in _imported_modules(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        parts = name.split(".")
        local = parts[1] if parts[0] == "tests" and len(parts) > 1 else parts[0]
        if parts[0] != "tests" and local not in LOCAL_MODULES:
            continue  # a library or the audit package
        where = f"{path.name}:{line}: imports {name}"
        if local.startswith("test_"):
            problems.append(f"{where} (a test module; move what is shared into a helper module)")
        elif local == "conftest":
            problems.append(f"{where} (conftest holds fixtures; helpers live in helper modules)")
        elif parts[0] != "tests":
            problems.append(f"{where} (spell it tests.{name})")
    return problems


def test_the_layout_check_sees_each_kind_of_bad_import(tmp_path):
    bad = tmp_path / "test_bad.py"
    # "| " keeps this sample from parsing as Python (and being checked) while it is a string here
    bad.write_text(
        textwrap.dedent('''
        | from conftest import archive
        | from tests.test_scan import scan
        | from cli_helper import audit_cli
        | from tests.cli_helper import audit_subprocess
        | import numpy
        | SCRIPT = """
        | import sys
        | from test_flag_scale import LookupEmbedder
        | """
    ''').replace("| ", "")
    )
    found = _problems(bad)
    assert [p.split(":")[1] for p in found] == ["2", "3", "4", "7"], found
    assert "conftest holds fixtures" in found[0] and "a test module" in found[1]
    assert "spell it tests.cli_helper" in found[2] and "test_flag_scale" in found[3]


def test_no_test_module_imports_another_or_conftest_and_helpers_are_imported_one_way():
    problems = [p for path in SUITE_FILES for p in _problems(path)]
    assert not problems, "\n".join(problems)


TEST_FILE_REFERENCE = re.compile(r"\btests/(test_\w+)\.py\b")


def test_every_test_file_named_in_the_code_and_tests_exists():
    named = {
        f"{path.relative_to(REPO)}: tests/{m.group(1)}.py"
        for folder in ("audit", "tests")
        for path in (REPO / folder).rglob("*.py")
        for m in TEST_FILE_REFERENCE.finditer(path.read_text(encoding="utf-8", errors="replace"))
        if not (TESTS / f"{m.group(1)}.py").exists()
    }
    assert not named, "references to test files that do not exist:\n" + "\n".join(sorted(named))
