"""The test suite as a package, so there is one way to import its helpers.

Helpers live in non-test modules here (``tests/cli_helper.py``, ``tests/toy_world.py``,
``tests/meta_fixtures.py``, ...) and every test imports them as ``from tests.<module> import
name``. With this file, pytest (default "prepend" import mode) puts the repository root, not
``tests/``, on ``sys.path``, so that spelling works however pytest is started, and each helper
module is imported once. Test modules never import each other or ``conftest`` (which holds
fixtures only); ``tests/test_suite_layout.py`` checks both.
"""
