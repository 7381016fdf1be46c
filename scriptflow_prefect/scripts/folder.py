"""A script's own folder (`<home>/workspaces/<id>/`) as its page shows it: a listing per
sub-folder and each file for download. Nothing outside the folder is reachable: `..`,
absolute names and symbolic links (a script may leave one pointing anywhere) answer 404.

Kept when the script is deleted (it is the user's data, as a Task Scheduler user expects);
history retention removes it once the script has been deleted for the retention period.

Example::

    listing = browse(settings, 7, "logs")      # Listing(path="logs", entries=[...])
    with open_in_folder(settings, 7, "logs/app.log") as f: ...
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from scriptflow_prefect.execution import nofollow
from scriptflow_prefect.platform.errors import ServiceError
from scriptflow_prefect.platform.i18n import _

MAX_LISTED = 1000


@dataclass(frozen=True)
class Listing:
    path: str  # "" for the folder itself, else "a/b"
    entries: list[nofollow.Entry]
    more: int  # entries left out past MAX_LISTED


def folder_of(settings, script_id: int) -> Path:
    return Path(settings.workspaces_dir) / str(int(script_id))


def _clean(path: str) -> str:
    try:
        return "/".join(nofollow.parts_of(path)) if path.strip("/") else ""
    except FileNotFoundError:
        raise _missing(path) from None


def _missing(path: str) -> ServiceError:
    return ServiceError(404, _("There is no %(path)s in this script's folder.", path=path[:200]))


def is_folder(settings, script_id: int, path: str) -> bool:
    root = folder_of(settings, script_id)
    return root.is_dir() and nofollow.is_dir(root, _clean(path))


def browse(settings, script_id: int, path: str = "") -> Listing:
    """The entries of a sub-folder (folders first); an empty listing when no run has made
    the folder yet."""
    clean, root = _clean(path), folder_of(settings, script_id)
    if not clean and not root.exists():
        return Listing("", [], 0)
    try:
        entries = nofollow.list_dir(root, clean)
    except OSError:
        raise _missing(path) from None
    return Listing(clean, entries[:MAX_LISTED], max(0, len(entries) - MAX_LISTED))


def open_in_folder(settings, script_id: int, path: str) -> BinaryIO:
    try:
        return nofollow.open_file(folder_of(settings, script_id), _clean(path))
    except OSError:
        raise _missing(path) from None
