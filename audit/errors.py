"""Errors the user can act on, each tied to the exit code the CLI returns for it.

Anything that is not an ``AuditError`` is a bug: the CLI reports it in one line too,
and ``--traceback`` shows where it came from.
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    OK = 0
    FINDINGS = 1  # `audit scan`: findings at or above --fail-on
    USAGE = 2  # bad flag, invalid policy, missing index, unreadable input
    ENVIRONMENT = 3  # weights unavailable, dependency missing, lock held
    INTERRUPTED = 130


class AuditError(Exception):
    """Base of every error meant for the user; ``str()`` is a one-line message."""

    exit_code: ExitCode = ExitCode.USAGE


class UsageError(AuditError):
    exit_code = ExitCode.USAGE


class InputError(AuditError):
    """An input (source, manifest, policy, index) cannot be used as given."""

    exit_code = ExitCode.USAGE


class IndexMissing(InputError):
    pass


class EnvironmentProblem(AuditError):
    exit_code = ExitCode.ENVIRONMENT


class LockHeld(EnvironmentProblem):
    pass


class DependencyMissing(EnvironmentProblem):
    pass


class WeightsUnavailable(EnvironmentProblem):
    pass
