"""Room on the disk that holds run output: stop writing before the disk is full, and name the
failure when it is.

The run output, the history index, the overlay database and (embedded) Prefect's own database
usually share one disk, SCRIPTFLOW_HOME's. A script that prints without end would fill it,
and then nothing could record that the run failed: Prefect could not write the state, the
overlay could not save an edit. So output capture stops while a reserve is still free
(`reserve_for`), and the run ends Failed with the code `disk_full`; the other writers keep
that reserve to finish what they were doing. A disk filled by something else still ends the
same way, by the write's own ENOSPC/EDQUOT.

Example::

    check_room(outputs_dir, len(data))   # raises DiskFull when writing data would eat the reserve
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

MIB = 1 << 20
# The reserve: 2 % of the disk, at least 4 MiB (a state, labels, the last log pages, a WAL
# checkpoint) and at most 32 MiB (plenty for the databases' last writes, little on a big disk).
RESERVE_MIN = 4 * MIB
RESERVE_MAX = 32 * MIB
RESERVE_SHARE = 50  # 1/50 = 2 %
_FULL_ERRNOS = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


class DiskFull(OSError):
    """Not written for lack of room; `folder` is where, `free` the bytes left there."""

    def __init__(self, folder: Path, free: int) -> None:
        super().__init__(errno.ENOSPC, f"only {human_size(free)} free on the disk of {folder}")
        self.folder = Path(folder)
        self.free = free


def is_full(exc: BaseException) -> bool:
    """Whether an error is the disk (or the user's quota) being full."""
    return isinstance(exc, OSError) and exc.errno in _FULL_ERRNOS


def reserve_for(total: int) -> int:
    return min(RESERVE_MAX, max(RESERVE_MIN, total // RESERVE_SHARE))


def free_bytes(folder: Path) -> tuple[int, int]:
    """(free to this user, total) bytes of the disk that holds `folder`."""
    folder = Path(folder)
    while not folder.exists() and folder.parent != folder:  # not made yet: its disk is the same
        folder = folder.parent
    usage = shutil.disk_usage(folder)
    return usage.free, usage.total


def check_room(folder: Path, needed: int) -> None:
    """Raise DiskFull if writing `needed` bytes in `folder` would leave less than the reserve."""
    free, total = free_bytes(folder)
    if free - needed < reserve_for(total):
        raise DiskFull(folder, free)


def human_size(size: int) -> str:
    """A byte count for a message: "0.8 MB" (decimal megabytes, one digit)."""
    return f"{size / 1_000_000:.1f} MB"
