"""SCRIPTFLOW_HOME private to the service account: folders 0700, files 0600.

Every ScriptFlow process starts with umask 077 (`private_umask`), so what it creates is
private; a home made by an older version (umask 022: 0755/0644, readable by every account on
the host) is fixed at start (`fix_home_modes`), with one log line saying what changed.

Left as they are: the interpreter/dependency environments (read by run-as accounts, see
`share_read_only`), the run folders (owned by the account a run runs as), and anything
carrying a POSIX ACL (set on purpose)."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

PRIVATE_UMASK = 0o077
_ACL_XATTR = "system.posix_acl_access"


def private_umask() -> None:
    os.umask(PRIVATE_UMASK)


def fix_home_modes(home: Path, keep: list[Path]) -> list[Path]:
    """Take group and other permissions off everything in `home` except the `keep` trees;
    return what was changed."""
    if sys.platform == "win32" or not home.is_dir():
        return []
    kept = {str(p) for p in keep}
    changed: list[Path] = []
    _make_private(home, changed)
    for root, dirs, files in os.walk(home):
        dirs[:] = [d for d in dirs if os.path.join(root, d) not in kept]
        for name in dirs + files:
            _make_private(Path(root, name), changed)
    return changed


def _make_private(path: Path, changed: list[Path]) -> None:
    try:
        info = os.lstat(path)
        if stat.S_ISLNK(info.st_mode) or not info.st_mode & 0o077 or _has_acl(path):
            return
        os.chmod(path, stat.S_IMODE(info.st_mode) & 0o700)
        changed.append(path)
    except OSError:
        return  # gone meanwhile, or not ours: nothing to fix here


def _has_acl(path: Path) -> bool:
    if sys.platform == "win32":
        return False
    try:
        return bool(os.getxattr(path, _ACL_XATTR, follow_symlinks=False))
    except (OSError, AttributeError):
        return False


def share_read_only(folder: Path) -> None:
    """Make an environment readable (and its programs runnable) by the accounts scripts run
    as; only those passed through the home's 0700 folders can reach it."""
    if sys.platform == "win32":
        return
    for root, dirs, files in os.walk(folder):
        for path in [Path(root), *(Path(root, f) for f in files)]:
            info = os.lstat(path)
            if stat.S_ISLNK(info.st_mode):
                continue
            mode = stat.S_IMODE(info.st_mode)
            wanted = mode | 0o044 | (0o011 if mode & 0o100 else 0)
            if wanted != mode:
                os.chmod(path, wanted)
        dirs.sort()
