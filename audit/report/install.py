"""Putting a report folder in place without ever deleting what is not ours.

``audit`` runs as root from cron, and a report folder may be writable by others, so every
file name it deletes is checked against the folder, never taken on trust from a manifest:

- A report is written into a staging folder ``.<name>.partial-<8 hex>`` beside its target
  and renamed into place. The writer holds an ``flock`` on the staging folder itself (a
  directory descriptor, so no extra file appears in the report) until it is done; the
  kernel drops it when the writer dies, even by SIGKILL.
- ``--force`` replaces an earlier report only when that report verifies (every listed file
  present with its SHA-256, nothing unlisted), every entry of the folder is a regular file
  directly inside it (no symlinks, no subfolders) with a plain name listed in its manifest.
  Anything else is refused in one line and nothing is deleted. The old folder is renamed
  aside (``.<name>.replaced-<8 hex>``), the new one renamed in, and the old files are then
  unlinked by name relative to the aside folder's descriptor (``unlink`` never follows a
  symlink).
- Staging and aside folders left by killed runs are removed by the next report written
  beside them, only when their lock can be taken (no live report owns them), they are
  real folders (not symlinks) and they hold regular files only (an aside folder must also
  still verify). Anything else there is left alone.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import secrets
import stat
from pathlib import Path

from audit.errors import UsageError
from audit.report.files import DIR_MODE
from audit.report.manifest import MANIFEST, verify_report

_LEFTOVER = re.compile(r"^\.(?P<name>.+)\.(?P<kind>partial|replaced)-[0-9a-f]{8}$")
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


class HeldFolder:
    """A folder and the open, flocked descriptor that marks it as in use by this process."""

    def __init__(self, path: Path, fd: int):
        self.path = path
        self.fd = fd

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # drops the flock
            self.fd = -1


def plain_name(name: str) -> bool:
    """A name this tool writes in a report folder: one component, no separators, not hidden."""
    return bool(name) and "/" not in name and "\\" not in name and "\0" not in name and not name.startswith(".")


# ----------------------------------------------------------------------------- earlier report


def replaceable_report(target: Path) -> list[str]:
    """The names of an earlier report in ``target`` that ``--force`` may remove; raises
    ``UsageError`` (nothing deleted) unless the folder holds exactly one intact report."""

    def refuse(why: str) -> UsageError:
        return UsageError(
            f"--out {target}: {why}; --force replaces only an intact earlier report of audit, nothing was deleted"
        )

    if os.path.islink(target):
        raise refuse("is a symbolic link")
    from audit.errors import InputError

    try:
        res = verify_report(target)
    except InputError as exc:
        raise refuse(str(exc).removeprefix(f"{target}: ")) from None
    if not res.ok:
        raise refuse(f"the earlier report there does not verify ({res.problems[0]})")
    names = sorted(res.listed) + [MANIFEST]
    bad = next((n for n in names if not plain_name(n)), None)
    if bad is not None:
        raise refuse(f"its manifest lists {bad!r}, not a plain file name of a report")
    for name in os.listdir(target):
        st = os.lstat(target / name)
        if name not in names or not stat.S_ISREG(st.st_mode):
            raise refuse(f"{name!r} there is not a file of the earlier report")
    return names


def hold_folder(path: Path) -> HeldFolder | None:
    """``path`` opened (never through a symlink) and flocked, or None when it is not a real
    folder or another process holds it."""
    try:
        fd = os.open(path, _DIR_FLAGS)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if not os.path.samestat(os.lstat(path), os.fstat(fd)):
            raise OSError(errno.ESTALE, "replaced meanwhile")
    except OSError:
        os.close(fd)
        return None
    return HeldFolder(path, fd)


def make_staging(parent: Path, name: str) -> HeldFolder:
    """A new, private, flocked staging folder for the report ``parent/name``."""
    for _ in range(8):
        path = parent / f".{name}.partial-{secrets.token_hex(4)}"
        try:
            os.mkdir(path, DIR_MODE)
        except FileExistsError:
            continue
        # A cleaner may take a just-made folder before this lock: then it is gone, try again.
        held = hold_folder(path)
        if held is not None:
            os.chmod(path, DIR_MODE)
            return held
    raise OSError(errno.EEXIST, "could not make a staging folder", str(parent))


def install(staging: HeldFolder, target: Path, replace: list[str] | None) -> list[str]:
    """Move the finished report ``staging`` to ``target``, replacing the earlier report
    named by ``replace`` (from ``replaceable_report``); returns notes for the summary."""
    if replace is None:
        if target.exists():
            os.rmdir(target)  # an empty folder only: rmdir refuses anything else
        os.rename(staging.path, target)  # atomic: the report appears whole or not at all
        return []
    old = hold_folder(target)
    if old is None:
        raise UsageError(f"--out {target}: in use by another report run or replaced meanwhile; nothing was deleted")
    aside = target.parent / f".{target.name}.replaced-{secrets.token_hex(4)}"
    try:
        os.rename(target, aside)
    except OSError:  # a mount point, or a folder we may not move: replace file by file
        old.close()
        return _replace_in_place(staging, target, replace)
    try:
        os.rename(staging.path, target)
    except BaseException:
        os.rename(aside, target)
        old.close()
        raise
    os.chmod(target, DIR_MODE)
    try:
        return _remove_files(old.fd, aside, replace, remove_folder=True)
    finally:
        old.close()


def _replace_in_place(staging: HeldFolder, target: Path, replace: list[str]) -> list[str]:
    fd = os.open(target, _DIR_FLAGS)
    try:
        new = sorted(os.listdir(staging.fd))
        for name in new:
            os.replace(name, name, src_dir_fd=staging.fd, dst_dir_fd=fd)
        _remove_files(fd, target, [n for n in replace if n not in new], remove_folder=False)
    finally:
        os.close(fd)
    os.rmdir(staging.path)
    return []


def _remove_files(dir_fd: int, folder: Path, names: list[str], *, remove_folder: bool) -> list[str]:
    """Unlink the plain regular files ``names`` of the folder open as ``dir_fd`` (the
    manifest last), then, with ``remove_folder``, the folder if it is empty; anything
    unexpected is left (and said)."""
    for name in names:
        if not plain_name(name):
            continue
        try:
            if stat.S_ISREG(os.lstat(name, dir_fd=dir_fd).st_mode):
                os.unlink(name, dir_fd=dir_fd)
        except FileNotFoundError:
            pass
    if remove_folder:
        try:
            os.rmdir(folder)
        except OSError:
            return [f"the earlier report's folder {folder} gained files meanwhile and was kept"]
    return []


# ----------------------------------------------------------------------------- leftovers


def clean_leftovers(parent: Path) -> int:
    """Remove the staging and aside folders of killed report runs in ``parent`` (see the
    module doc for exactly which); returns how many were removed."""
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return 0
    removed = 0
    for entry in entries:
        m = _LEFTOVER.match(entry.name)
        if m is None or not entry.is_dir(follow_symlinks=False):
            continue
        held = hold_folder(Path(entry.path))
        if held is None:
            continue  # a live report, or not a real folder
        try:
            if _remove_leftover(held, replaced=m.group("kind") == "replaced"):
                removed += 1
        finally:
            held.close()
    return removed


def _remove_leftover(held: HeldFolder, *, replaced: bool) -> bool:
    """Remove one leftover folder we hold. An aside folder whose report never got replaced
    (the run died between its two renames) is renamed back instead."""
    from audit.errors import AuditError

    try:
        names = os.listdir(held.fd)
        if not all(plain_name(n) and stat.S_ISREG(os.lstat(n, dir_fd=held.fd).st_mode) for n in names):
            return False
        if replaced and names:
            # the earlier report, maybe partly removed already (its manifest goes last)
            res = verify_report(held.path)
            if not all(p.endswith(": missing") for p in res.problems):
                return False
            target = held.path.parent / _LEFTOVER.match(held.path.name).group("name")
            if res.ok and not os.path.lexists(target):
                os.rename(held.path, target)
                return True
        for name in sorted(names, key=lambda n: n == MANIFEST):
            os.unlink(name, dir_fd=held.fd)
        os.rmdir(held.path)
    except (OSError, ValueError, AuditError):
        return False
    return True
