"""Running a script as another OS account on POSIX: who it is, how to become it, its folders.

Two ways, chosen by what the worker may do:

- the worker runs as root (like cron): the child drops to the account's uid, gid and groups
  (`Popen(user=, group=, extra_groups=)`, the groups of `initgroups`);
- otherwise: ``sudo -n -u ACCOUNT --`` in front of the command, which needs a sudoers rule
  (README, "Production recipe"); `-n` makes a missing rule fail at once instead of asking.

The account is given the folders ScriptFlow made for the run (owner when root; an ACL entry
otherwise) and may pass through (`--x` ACL entry, no listing) the folders of
SCRIPTFLOW_HOME above them, which stays 0700. HOME, USER and LOGNAME are the account's.
Imported on POSIX only."""

from __future__ import annotations

import errno
import os
import pwd
import struct
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scriptflow_prefect.execution.models import ScriptStartError, UnknownAccount

assert sys.platform != "win32"

_ACL_XATTR = "system.posix_acl_access"
_DEFAULT_ACL_XATTR = "system.posix_acl_default"
_ACL_VERSION = 2
_USER_OBJ, _USER, _GROUP_OBJ, _GROUP, _MASK, _OTHER = 1, 2, 4, 8, 0x10, 0x20
_NO_ID = 0xFFFFFFFF


@dataclass(frozen=True)
class RunAccount:
    name: str
    uid: int
    gid: int
    home: str
    groups: tuple[int, ...]

    @property
    def is_current(self) -> bool:
        return self.uid == os.geteuid()


def find_account(name: str) -> RunAccount:
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise UnknownAccount(name) from None
    groups = tuple(os.getgrouplist(name, entry.pw_gid))
    return RunAccount(name, entry.pw_uid, entry.pw_gid, entry.pw_dir, groups)


def account_env(env: dict[str, str], account: RunAccount) -> None:
    env.update({"HOME": account.home, "USER": account.name, "LOGNAME": account.name})


def switch_user(account: RunAccount) -> tuple[list[str], dict[str, Any]]:
    """A command prefix and Popen options that start the process as `account`."""
    if account.is_current:
        return [], {}
    if os.geteuid() == 0:
        return [], {"user": account.uid, "group": account.gid, "extra_groups": account.groups}
    return ["sudo", "-n", "-u", account.name, "--"], {}


def give_folders(
    account: RunAccount, own: list[Path], reach: list[Path], within: list[Path]
) -> None:
    """Let `account` use the `own` folders (whole trees), and pass through the folders above
    them and above `reach` (read by all already) up to the `within` folder holding each."""
    if account.is_current:
        return
    for folder in [*own, *reach]:
        holder = next((w for w in within if w == folder or w in folder.parents), None)
        if holder is not None:
            for parent in [p for p in folder.parents if p == holder or holder in p.parents]:
                _grant(parent, account.uid, 0o1)
    for folder in own:
        if os.geteuid() == 0:
            _chown_tree(folder, account.uid, account.gid)
        else:
            _grant_tree(folder, account.uid)


def _chown_tree(folder: Path, uid: int, gid: int) -> None:
    os.chown(folder, uid, gid, follow_symlinks=False)
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            os.chown(os.path.join(root, name), uid, gid, follow_symlinks=False)


def _grant_tree(folder: Path, uid: int) -> None:
    # Without root: an ACL entry on what the worker made, and a default one so that what the
    # account creates inside stays removable by the worker afterwards.
    # A script's own folder keeps what earlier runs left, links too: a link is never
    # followed (it could point at the worker's own files) and a link's ACL is not set.
    worker = os.geteuid()
    for root, _dirs, files in os.walk(folder):
        _grant(Path(root), uid, 0o7)
        _set_default(Path(root), [(uid, 0o7), (worker, 0o7)])
        for name in files:
            if not os.path.islink(os.path.join(root, name)):
                _grant(Path(root) / name, uid, 0o6)


def _grant(path: Path, uid: int, perm: int) -> None:
    """Add (or widen) the ACL entry of user `uid` on `path`."""
    mode = os.lstat(path).st_mode
    entries = _read_acl(path, _ACL_XATTR) or {
        (_USER_OBJ, _NO_ID): (mode >> 6) & 7,
        (_GROUP_OBJ, _NO_ID): (mode >> 3) & 7,
        (_OTHER, _NO_ID): mode & 7,
    }
    entries[(_USER, uid)] = entries.get((_USER, uid), 0) | perm
    mask = entries.get((_MASK, _NO_ID), (mode >> 3) & 7)
    entries[(_MASK, _NO_ID)] = mask | perm
    _write_acl(path, _ACL_XATTR, entries)


def _set_default(path: Path, users: list[tuple[int, int]]) -> None:
    entries = {(_USER_OBJ, _NO_ID): 7, (_GROUP_OBJ, _NO_ID): 0, (_OTHER, _NO_ID): 0}
    for uid, perm in users:
        entries[(_USER, uid)] = perm
    entries[(_MASK, _NO_ID)] = 7
    _write_acl(path, _DEFAULT_ACL_XATTR, entries)


def _read_acl(path: Path, name: str) -> dict[tuple[int, int], int] | None:
    try:
        raw = os.getxattr(path, name, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in (errno.ENODATA, errno.ENOTSUP):
            return None
        raise
    entries = {}
    for offset in range(4, len(raw), 8):
        tag, perm, ident = struct.unpack_from("<HHI", raw, offset)
        entries[(tag, ident)] = perm
    return entries


def _write_acl(path: Path, name: str, entries: dict[tuple[int, int], int]) -> None:
    body = b"".join(struct.pack("<HHI", tag, entries[(tag, i)], i) for tag, i in sorted(entries))
    try:
        # a link swapped in meanwhile is refused (EPERM), not followed
        os.setxattr(path, name, struct.pack("<I", _ACL_VERSION) + body, follow_symlinks=False)
    except OSError as exc:
        raise ScriptStartError(
            f"Could not give the run's folder {path} to its account (ACL: {exc.strerror}); "
            "the file system must support POSIX ACLs, or the worker must run as root"
        ) from exc
