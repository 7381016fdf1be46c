"""A script version's files: the entry point and its companions (a `.ini`, a `.sql`, a
template), uploaded as several files or one `.zip`, each kept in the script store by hash.

Names are relative paths inside the script's folder (`conf/settings.ini`): sub-folders of a
zip are kept. Every name is checked so that, written on Linux or Windows, it stays inside the
folder and means one file: no absolute names, no `..`, no device names (CON, NUL, COM1...), no
two names that differ only in case. A zip holding one top folder (`report/job.py`, what
zipping a folder makes) is read as that folder's contents.

Example::

    bundle = bundle_of([("job.py", b"..."), ("settings.ini", b"...")], entry=None)
    bundle.entry.name == "job.py"; [f.name for f in bundle.companions] == ["settings.ini"]
"""

from __future__ import annotations

import io
import re
import stat
import unicodedata
import zipfile
from dataclasses import dataclass
from pathlib import PurePosixPath, PureWindowsPath
from typing import Any

from scriptflow_prefect.platform.disk_space import is_full
from scriptflow_prefect.platform.errors import ServiceError
from scriptflow_prefect.platform.i18n import _
from scriptflow_prefect.scripts import store
from scriptflow_prefect.scripts.models import Script

MAX_TOTAL_BYTES = 10 * 1024 * 1024
MAX_FILES = 100
MAX_ZIP_ENTRIES = 1000  # folders and files together: a zip of 60 000 empty entries is refused
MAX_DEPTH = 16
MAX_NAME_CHARS = 400
ENTRY_SUFFIXES = (".py", ".bat", ".cmd")
# Names Windows gives to devices in every folder, whatever the extension ("nul.txt" too).
_DEVICES = {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"}
_DEVICES |= {f"{p}{n}" for p in ("COM", "LPT") for n in "123456789¹²³"}
_NOT_ON_WINDOWS = set('<>:"|?*')


@dataclass(frozen=True)
class ScriptFile:
    name: str  # relative, "/"-separated
    data: bytes


@dataclass(frozen=True)
class Bundle:
    entry: ScriptFile
    companions: tuple[ScriptFile, ...] = ()


def check_name(raw: str) -> str:
    """The name as a clean relative path ("a/b.ini"), or a 422 saying what is wrong."""
    text = (raw or "").replace("\\", "/")
    if text.startswith("/") or re.match(r"^[A-Za-z]:", text):
        raise ServiceError(
            422,
            _(
                "%(name)s is an absolute path: names must stay inside the script's folder.",
                name=_shown(raw),
            ),
        )
    parts = [p for p in text.split("/") if p not in ("", ".")]
    if not parts:
        raise ServiceError(422, _("A file has no name."))
    if len(parts) > MAX_DEPTH or len(text) > MAX_NAME_CHARS:
        raise ServiceError(422, _("%(name)s is too long or too deep.", name=_shown(raw)))
    for part in parts:
        _check_part(part, raw)
    return "/".join(parts)


def _check_part(part: str, raw: str) -> None:
    if part == "..":
        raise ServiceError(
            422, _("%(name)s points outside the script's folder (..).", name=_shown(raw))
        )
    if (
        any(unicodedata.category(c)[0] == "C" or c in _NOT_ON_WINDOWS for c in part)
        or part[-1] in ". "
        or len(part) > 255
    ):
        raise ServiceError(
            422,
            _(
                "%(name)s cannot be a file name on Windows: no control characters, "
                '< > : " | ? *, and no dot or space at the end.',
                name=_shown(raw),
            ),
        )
    if part.split(".", 1)[0].rstrip(" ").upper() in _DEVICES:
        raise ServiceError(
            422, _("%(name)s is a device name on Windows (like CON or NUL).", name=_shown(raw))
        )


def _shown(name: str) -> str:
    return repr(name)[1:-1][:120] or "?"


def is_entry_name(name: str) -> bool:
    return "/" not in name and name.lower().endswith(ENTRY_SUFFIXES)


def bundle_of(parts: list[tuple[str, bytes]], entry: str | None = None) -> Bundle:
    """Several uploaded files (only their last name part counts, as for one file) or one zip,
    and which of them is the entry point: the one named `entry`, or the single .py/.bat/.cmd
    (at the top of the folder)."""
    if not parts:
        raise ServiceError(400, _("Choose a .py or .bat file to upload."))
    zips = [name for name, _data in parts if name.lower().endswith(".zip")]
    if zips and len(parts) > 1:
        raise ServiceError(422, _("Upload one .zip on its own, or several files without a .zip."))
    if zips:
        files = unpack_zip(parts[0][1])
    else:
        files = [ScriptFile(check_name(_last_part(name)), data) for name, data in parts]
    _check_set(files)
    chosen = _entry_of(files, entry)
    return Bundle(
        next(f for f in files if f.name == chosen),
        tuple(f for f in files if f.name != chosen),
    )


def _last_part(filename: str) -> str:
    """As for one uploaded file: an uploaded name is a label, only its last part is kept."""
    name = PureWindowsPath(PurePosixPath(filename or "").name).name
    name = "".join(c for c in name if unicodedata.category(c)[0] != "C").strip(" .")
    return name or "?"


def _check_set(files: list[ScriptFile]) -> None:
    if len(files) > MAX_FILES:
        raise ServiceError(422, _("A script has at most %(n)s files.", n=MAX_FILES))
    if sum(len(f.data) for f in files) > MAX_TOTAL_BYTES:
        raise ServiceError(413, _("The files are larger than the 10 MB limit together."))
    seen: dict[str, str] = {}
    folders = {
        "/".join(f.name.split("/")[:i]).casefold()
        for f in files
        for i in range(1, f.name.count("/") + 1)
    }
    for f in files:
        key = f.name.casefold()
        if key in seen or key in folders:
            raise ServiceError(
                422,
                _(
                    "%(a)s and %(b)s would be the same file on Windows (names differ only in "
                    "case, or a file has a folder's name).",
                    a=_shown(seen.get(key, f.name)),
                    b=_shown(f.name),
                ),
            )
        seen[key] = f.name


def _entry_of(files: list[ScriptFile], entry: str | None) -> str:
    if entry:
        wanted = check_name(entry)
        found = next((f.name for f in files if f.name.casefold() == wanted.casefold()), None)
        if found is None:
            raise ServiceError(
                422, _("There is no file named %(name)s among the files.", name=_shown(entry))
            )
        if not is_entry_name(found):
            raise ServiceError(
                422,
                _(
                    "The entry point must be a .py or .bat file at the top of the folder, not "
                    "%(name)s.",
                    name=_shown(found),
                ),
            )
        return found
    candidates = [f.name for f in files if is_entry_name(f.name)]
    if not candidates:
        raise ServiceError(
            400,
            _(
                "Only .py and .bat files can be uploaded (got %(name)s).",
                name=", ".join(_shown(f.name) for f in files[:5]),
            ),
        )
    if len(candidates) > 1:
        raise ServiceError(
            422,
            _(
                "Several files could be the script (%(names)s): name the one to run in entry.",
                names=", ".join(candidates[:10]),
            ),
        )
    return candidates[0]


def unpack_zip(data: bytes) -> list[ScriptFile]:
    """The files of a zip, names checked, read no further than the size limit (a zip's
    stated sizes are not trusted)."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        infos = archive.infolist()
    except (zipfile.BadZipFile, ValueError, EOFError):
        raise ServiceError(400, _("The .zip file cannot be read.")) from None
    if len(infos) > MAX_ZIP_ENTRIES:
        raise ServiceError(422, _("A script has at most %(n)s files.", n=MAX_FILES))
    wanted = []
    for info in infos:
        name = check_name(info.filename)
        if info.is_dir():
            continue
        if stat.S_ISLNK(info.external_attr >> 16):
            raise ServiceError(
                422, _("%(name)s is a symbolic link: links are not kept.", name=_shown(name))
            )
        if info.flag_bits & 0x1:
            raise ServiceError(422, _("The .zip file is encrypted."))
        wanted.append((name, info))
    if len(wanted) > MAX_FILES:
        raise ServiceError(422, _("A script has at most %(n)s files.", n=MAX_FILES))
    prefix = _common_folder([name for name, _info in wanted])
    files, room = [], MAX_TOTAL_BYTES
    for name, info in wanted:
        try:
            with archive.open(info) as member:
                content = member.read(room + 1)
        except (zipfile.BadZipFile, NotImplementedError, OSError, EOFError, ValueError):
            raise ServiceError(400, _("The .zip file cannot be read.")) from None
        room -= len(content)
        if room < 0:
            raise ServiceError(413, _("The files are larger than the 10 MB limit together."))
        files.append(ScriptFile(name[len(prefix) :], content))
    if not files:
        raise ServiceError(400, _("The .zip file holds no files."))
    return files


def _common_folder(names: list[str]) -> str:
    """`report/` when every name is inside one folder `report`, else the empty string."""
    tops = {n.split("/", 1)[0] for n in names}
    if len(tops) == 1 and all("/" in n for n in names):
        return tops.pop() + "/"
    return ""


async def store_files(files: list[ScriptFile]) -> list[dict[str, Any]]:
    """Put each file in the script store; their list as a version keeps it. Nothing is
    stored in the database until every file is in the store."""
    listed = []
    for f in files:
        try:
            digest = await store.put(f.data)
        except OSError as exc:
            if not is_full(exc):
                raise ServiceError(
                    503, _("The script store is not reachable: %(err)s", err=str(exc)[:200])
                ) from exc
            raise ServiceError(
                507,
                _("The disk is full: the script could not be stored (%(err)s).", err=exc.strerror),
            ) from exc
        except Exception as exc:
            raise ServiceError(
                503, _("The script store is not reachable: %(err)s", err=str(exc)[:200])
            ) from exc
        listed.append({"name": f.name, "size": len(f.data), "sha256": digest})
    return listed


async def next_version_files(
    previous: list[dict[str, Any]],
    entry: ScriptFile,
    companions: tuple[ScriptFile, ...] | None,
) -> list[dict[str, Any]]:
    """A new version's files: the entry point with `companions` (an upload of the whole
    set), or, when they are None, with the previous version's companions."""
    listed = await store_files([entry, *(companions or ())])
    return listed + (previous[1:] if companions is None else [])


def files_of(script: Script) -> list[dict[str, Any]]:
    """A script's current version's files, entry point first (API.md: the script's `files`)."""
    v = next(v for v in script.versions if v.version == script.current_version)
    return version_files(v.files, script.filename, v.sha256, v.size)


def version_files(files: list | None, filename: str, sha256: str, size: int) -> list[dict]:
    """A version's files, entry first; versions saved before files existed: the entry."""
    if files:
        return [dict(f) for f in files]
    return [{"name": filename, "size": size, "sha256": sha256}]
