"""Files inside a folder that scripts also write to, read and written without ever following a
symbolic link (or a Windows junction) out of it.

A script may leave `conf -> /etc` in its folder; writing its next version's `conf/x.ini`,
listing the folder for the script page or copying what a run changed must not reach /etc.
On POSIX each step opens the next folder relative to the last one with O_NOFOLLOW, so a link
swapped in meanwhile is refused too; Windows has no such calls: each step is checked with
lstat (links and junctions are reparse points) just before it is used.

Example::

    write_file(folder, "conf/settings.ini", data)
    with open_file(folder, "logs/app.log") as f: ...
    entries, complete = scan(folder, limit=10_000)
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_BINARY = getattr(os, "O_BINARY", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)  # opening a FIFO a script left must not hang
_REPARSE_POINT = 0x400  # FILE_ATTRIBUTE_REPARSE_POINT: symlinks and junctions on Windows
# Relative opens exist on Linux and macOS; elsewhere (Windows) paths are checked step by step.
FD_BASED = os.open in os.supports_dir_fd and bool(_NOFOLLOW) and sys.platform != "win32"


@dataclass(frozen=True)
class Entry:
    name: str  # relative to the folder scanned, "/"-separated
    is_dir: bool
    size: int
    mtime_ns: int

    @property
    def modified(self) -> datetime:
        return datetime.fromtimestamp(self.mtime_ns / 1e9, UTC)


def parts_of(name: str) -> list[str]:
    """The steps of a relative name; anything that could leave the folder is refused. On
    Windows `\\` separates too and `:` (a drive, a data stream) is refused; on POSIX both
    are ordinary characters of a name."""
    text = name.replace("\\", "/") if sys.platform == "win32" else name
    parts = [p for p in text.split("/") if p not in ("", ".")]
    bad = "\x00" in text or any(p == ".." or (sys.platform == "win32" and ":" in p) for p in parts)
    if not parts or text.startswith("/") or bad:
        raise FileNotFoundError(errno.ENOENT, "not a name inside the folder", name)
    try:
        os.fsencode(text)
    except UnicodeError:  # no file can have this name here
        raise FileNotFoundError(errno.ENOENT, "not a name on this system", name) from None
    return parts


def _is_link(st: os.stat_result) -> bool:
    return stat.S_ISLNK(st.st_mode) or bool(getattr(st, "st_file_attributes", 0) & _REPARSE_POINT)


class _Folder:
    """One open folder: an fd on POSIX, a checked path on Windows."""

    def __init__(self, path: Path, fd: int | None) -> None:
        self.path, self.fd = path, fd

    @classmethod
    def open_root(cls, root: Path) -> _Folder:
        if FD_BASED:
            return cls(root, os.open(root, os.O_RDONLY | _DIRECTORY | _NOFOLLOW))
        if _is_link(os.lstat(root)) or not root.is_dir():
            raise FileNotFoundError(errno.ENOENT, "not a folder", str(root))
        return cls(root, None)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)

    def lstat(self, name: str) -> os.stat_result:
        if self.fd is not None:
            return os.stat(name, dir_fd=self.fd, follow_symlinks=False)
        return os.lstat(self.path / name)

    def child(self, name: str, *, create: bool = False) -> _Folder:
        """The sub-folder `name`; with `create`, a link or file of that name is replaced."""
        try:
            st = self.lstat(name)
            if _is_link(st) or not stat.S_ISDIR(st.st_mode):
                if not create:
                    raise FileNotFoundError(errno.ENOENT, "not a folder", name)
                self.remove(name)
                raise FileNotFoundError
        except FileNotFoundError:
            if not create:
                raise
            if self.fd is not None:
                os.mkdir(name, 0o777, dir_fd=self.fd)
            else:
                os.mkdir(self.path / name)
        if self.fd is not None:
            try:
                fd = os.open(name, os.O_RDONLY | _DIRECTORY | _NOFOLLOW, dir_fd=self.fd)
            except OSError as exc:  # ELOOP / ENOTDIR: swapped for a link meanwhile
                raise FileNotFoundError(errno.ENOENT, "not a folder", name) from exc
            return _Folder(self.path / name, fd)
        return _Folder(self.path / name, None)

    def remove(self, name: str) -> None:
        st = self.lstat(name)
        if stat.S_ISDIR(st.st_mode) and not _is_link(st):
            if self.fd is not None:
                shutil.rmtree(name, dir_fd=self.fd)
            else:
                shutil.rmtree(self.path / name)
        elif self.fd is not None:
            os.unlink(name, dir_fd=self.fd)
        elif stat.S_ISDIR(st.st_mode):
            os.rmdir(self.path / name)  # a junction: remove the link, not what it points at
        else:
            os.unlink(self.path / name)

    def open(self, name: str, flags: int, mode: int = 0o644) -> int:
        flags |= _NOFOLLOW | _BINARY
        if self.fd is not None:
            return os.open(name, flags, mode, dir_fd=self.fd)
        if os.path.lexists(self.path / name) and _is_link(self.lstat(name)):
            raise FileNotFoundError(errno.ENOENT, "a link", name)
        return os.open(self.path / name, flags, mode)

    def replace(self, src: str, dst: str) -> None:
        if self.fd is not None:
            os.replace(src, dst, src_dir_fd=self.fd, dst_dir_fd=self.fd)
        else:
            os.replace(self.path / src, self.path / dst)

    def entries(self) -> list[tuple[str, os.stat_result]]:
        """(name, lstat) of each entry, sorted by name."""
        with os.scandir(self.fd if self.fd is not None else self.path) as it:
            found = []
            for e in it:
                with contextlib.suppress(OSError):
                    found.append((e.name, e.stat(follow_symlinks=False)))
        return sorted(found)


@contextlib.contextmanager
def _folder(root: Path, parts: list[str], *, create: bool = False) -> Iterator[_Folder]:
    if create:
        Path(root).mkdir(parents=True, exist_ok=True)
    current = _Folder.open_root(Path(root))
    try:
        for part in parts:
            nxt = current.child(part, create=create)
            current.close()
            current = nxt
        yield current
    finally:
        current.close()


def write_file(root: Path, name: str, data: bytes) -> bool:
    """Write `data` as `root/name` (folders made, a link or folder in the way replaced);
    False when the file already held exactly these bytes (it is left untouched)."""
    *dirs, base = parts_of(name)
    with _folder(root, dirs, create=True) as folder:
        with contextlib.suppress(OSError):
            st = folder.lstat(base)
            if stat.S_ISREG(st.st_mode) and st.st_size == len(data):
                fd = folder.open(base, os.O_RDONLY | _NONBLOCK)
                with os.fdopen(fd, "rb") as f:
                    if f.read(len(data) + 1) == data:
                        return False
        temp = f".{base[:200]}.{uuid.uuid4().hex[:12]}.tmp"  # runs of one script may overlap
        fd = folder.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            with contextlib.suppress(FileNotFoundError):
                st = folder.lstat(base)
                if stat.S_ISDIR(st.st_mode) or _is_link(st):
                    folder.remove(base)
            folder.replace(temp, base)  # the old copy stays whole until the new one is done
        except BaseException:
            with contextlib.suppress(OSError):
                folder.remove(temp)
            raise
    return True


def open_file(root: Path, name: str) -> BinaryIO:
    """`root/name` for reading; FileNotFoundError if it is missing, not a regular file, or
    reached through a link."""
    *dirs, base = parts_of(name)
    with _folder(root, dirs) as folder:
        try:
            fd = folder.open(base, os.O_RDONLY | _NONBLOCK)
        except OSError as exc:
            raise FileNotFoundError(errno.ENOENT, "not a file", name) from exc
    f = os.fdopen(fd, "rb")
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        f.close()
        raise FileNotFoundError(errno.ENOENT, "not a file", name)
    return f


def list_dir(root: Path, name: str = "") -> list[Entry]:
    """The files and folders in `root/name` (links left out), folders first."""
    parts = parts_of(name) if name.strip("/") else []
    with _folder(root, parts) as folder:
        found = [_entry(n, st) for n, st in folder.entries() if _listed(st)]
    return sorted(found, key=lambda e: (not e.is_dir, e.name.casefold()))


def is_dir(root: Path, name: str) -> bool:
    try:
        with _folder(root, parts_of(name) if name.strip("/") else []):
            return True
    except OSError:  # missing, a file, a link, a name too long...
        return False


def _listed(st: os.stat_result) -> bool:
    return not _is_link(st) and (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode))


def _entry(name: str, st: os.stat_result) -> Entry:
    return Entry(name, stat.S_ISDIR(st.st_mode), st.st_size, st.st_mtime_ns)


def scan(root: Path, limit: int, skip: frozenset[str] = frozenset()) -> tuple[list[Entry], bool]:
    """Every regular file under `root` (links not followed), breadth first in name order, at
    most `limit` entries looked at; and whether the scan saw everything. `skip`: top-level
    names left out."""
    files: list[Entry] = []
    seen = 0
    queue: list[str] = [""]
    while queue:
        prefix = queue.pop(0)
        try:
            with _folder(root, parts_of(prefix) if prefix else []) as folder:
                listed = folder.entries()
        except OSError:
            continue  # gone, or turned into a link, since it was seen
        for name, st in listed:
            if not prefix and name in skip:
                continue
            seen += 1
            if seen > limit:
                return files, False
            rel = f"{prefix}/{name}" if prefix else name
            if _is_link(st):
                continue
            if stat.S_ISDIR(st.st_mode):
                queue.append(rel)
            elif stat.S_ISREG(st.st_mode):
                files.append(_entry(rel, st))
    return files, True
