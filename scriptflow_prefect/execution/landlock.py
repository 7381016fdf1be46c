"""Landlock through its three system calls (ctypes, no C extension): the sandbox of a run.

Standalone on purpose (standard library only, no ScriptFlow import): `sandbox.py` runs this
file's source with ``python -I -S -c`` in front of the script's command, so it works for any
account the script runs as, whatever that account may read. It builds the rules, restricts
itself (no_new_privs + landlock_restrict_self; both pass to every child), then execs the
command::

    python -I -S -c "<this source>" '{"hidden": [...], "writable": [...], "read_only": [...]}' \\
        -- python -u script.py

Landlock is an allow-list: "everything but the hidden paths" is a rule for every entry beside
each hidden path's ancestors, as they are when the run starts (see README: an entry created
later directly in such an ancestor is out of reach). Symbolic links there get no rule: one
could point into a hidden path. Being in a Landlock domain also denies ptrace-attaching
processes outside it; `SCOPE_SIGNAL` (ABI 6) stops signals to them.
"""

from __future__ import annotations

import ctypes
import json
import os
import stat
import sys

_CREATE_RULESET, _ADD_RULE, _RESTRICT_SELF = 444, 445, 446  # the same on every architecture
_VERSION_FLAG = 1
_RULE_PATH_BENEATH = 1
_PR_SET_NO_NEW_PRIVS = 38
_SCOPE_SIGNAL = 2

EXECUTE, WRITE_FILE, READ_FILE, READ_DIR = 1, 2, 4, 8
REFER, TRUNCATE, IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15
READ_ONLY = EXECUTE | READ_FILE | READ_DIR
# Rights that apply to a file (the others are about a directory's entries).
_FILE_RIGHTS = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV


class LandlockError(OSError):
    """The kernel refused to build or apply the sandbox."""


class _RulesetAttr(ctypes.Structure):
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    ]


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def abi_version() -> int:
    """The kernel's Landlock ABI (1 = Linux 5.13 ... 7 = 6.15), 0 without Landlock."""
    if not sys.platform.startswith("linux"):
        return 0
    try:
        version = _libc().syscall(_CREATE_RULESET, None, 0, _VERSION_FLAG)
    except (OSError, AttributeError):
        return 0
    return max(int(version), 0)


def all_rights(abi: int) -> int:
    """Every file-system right this ABI knows (13 in ABI 1; REFER 2, TRUNCATE 3, IOCTL_DEV 5)."""
    rights = (1 << 13) - 1
    if abi >= 2:
        rights |= REFER
    if abi >= 3:
        rights |= TRUNCATE
    if abi >= 5:
        rights |= IOCTL_DEV
    return rights


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def rules(
    hidden: list[str], writable: list[str], read_only: list[str], abi: int
) -> list[tuple[str, int]]:
    """(path, rights) pairs: everything but `hidden` with every right, except `read_only`
    (read and execute); `writable` with every right. Paths are absolute."""
    hide = {os.path.realpath(p) for p in hidden}
    keep = {os.path.realpath(p) for p in read_only}
    found: list[tuple[str, int]] = []
    _allow_beside("/", hide, keep, all_rights(abi), found)
    # Also a rule of their own: one inside a hidden path, or in a folder this account cannot
    # list, is not reached above. Never on one holding a hidden path: that would open it.
    found += [(p, READ_ONLY) for p in sorted(keep) if not any(_inside(h, p) for h in hide)]
    found += [(os.path.realpath(p), all_rights(abi)) for p in writable]
    return found


def _allow_beside(
    folder: str, hide: set[str], keep: set[str], rights: int, found: list[tuple[str, int]]
) -> None:
    """A rule for each entry of `folder` but the hidden ones; an entry holding a hidden or
    read-only path gets none: its own entries are looked at in turn."""
    try:
        entries = os.listdir(folder)
    except OSError:
        return  # a folder this account cannot list: nothing in it is allowed
    for entry in entries:
        path = os.path.join(folder, entry)
        if path in hide:
            continue
        inner = rights & READ_ONLY if path in keep else rights
        if any(_inside(h, path) for h in hide) or any(_inside(k, path) for k in keep - {path}):
            _allow_beside(path, hide, keep, inner, found)
        else:
            found.append((path, inner))


def restrict(found: list[tuple[str, int]], abi: int, scope_signals: bool = True) -> None:
    """Apply the rules to this process and every process it starts from now on."""
    libc = _libc()
    everything = all_rights(abi)
    scoped = _SCOPE_SIGNAL if scope_signals and abi >= 6 else 0
    attr = _RulesetAttr(everything, 0, scoped)
    size = ctypes.sizeof(attr) if abi >= 6 else (16 if abi >= 4 else 8)
    ruleset = libc.syscall(_CREATE_RULESET, ctypes.byref(attr), size, 0)
    if ruleset < 0:
        raise LandlockError(ctypes.get_errno(), "landlock_create_ruleset failed")
    try:
        for path, access in found:
            _add_rule(libc, ruleset, path, access & everything)
        if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise LandlockError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
        if libc.syscall(_RESTRICT_SELF, ruleset, 0) != 0:
            raise LandlockError(ctypes.get_errno(), "landlock_restrict_self failed")
    finally:
        os.close(ruleset)


def _add_rule(libc: ctypes.CDLL, ruleset: int, path: str, access: int) -> None:
    if sys.platform == "win32":
        return
    try:
        fd = os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return  # gone since it was listed, or not reachable by this account
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISLNK(mode):
            return  # a link's target is checked where it lies
        if not stat.S_ISDIR(mode):
            access &= _FILE_RIGHTS
        rule = _PathBeneath(access, fd)
        if libc.syscall(_ADD_RULE, ruleset, _RULE_PATH_BENEATH, ctypes.byref(rule), 0) != 0:
            raise LandlockError(ctypes.get_errno(), f"landlock_add_rule failed for {path}")
    finally:
        os.close(fd)


def main(argv: list[str]) -> int:
    """`<spec json> -- command...`: sandbox this process, then become the command."""
    if len(argv) < 3 or argv[1] != "--":
        print("scriptflow sandbox: usage: SPEC -- COMMAND...", file=sys.stderr)
        return 2
    spec = json.loads(argv[0])
    abi = abi_version()
    try:
        if abi < 1:
            raise LandlockError(0, "this kernel has no Landlock")
        found = rules(spec["hidden"], spec["writable"], spec["read_only"], abi)
        restrict(found, abi)
    except (LandlockError, OSError) as exc:
        # Never run unsandboxed when a sandbox was asked for.
        print(f"scriptflow sandbox: {exc}", file=sys.stderr)
        return 126
    try:
        os.execvp(argv[2], argv[2:])
    except OSError as exc:
        print(f"scriptflow sandbox: cannot start {argv[2]!r}: {exc}", file=sys.stderr)
        return 127


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
