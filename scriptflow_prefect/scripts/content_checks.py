"""What an uploaded script's text says before it ever runs: whether Python can read a .py
(in the encoding it declares), and what a .bat uses that this Linux worker's wine lacks.

Python reads a source as UTF-8 unless it starts with a UTF-8 byte order mark or declares
another encoding on its first or second line (PEP 263: `# -*- coding: cp1252 -*-`);
`tokenize.detect_encoding` applies exactly those rules. A file Python cannot read is refused
with the line and the byte at fault, as a person fixes it in an editor.

Example::

    python_text_problem(b"# coding: cp1252\\nprint('caf\\xe9')\\n")   # None: accepted
    python_text_problem(b"print('ok')\\nprint('caf\\xe9')\\n")
    # "line 2: byte 0xe9 is not valid UTF-8 and the file declares no other encoding"
"""

from __future__ import annotations

import codecs
import io
import re
import sys
import tokenize
from typing import Any

from scriptflow_prefect.execution.bat_commands import unavailable_commands
from scriptflow_prefect.execution.bat_text import bat_encoding
from scriptflow_prefect.platform.i18n import _

COMPATIBILITY_KEY = "compatibility"  # in Script.settings: {"version": n, "wine_lacks": [...]}
_COOKIE = re.compile(rb"^[ \t\f]*#.*?coding[:=][ \t]*([-\w.]+)", re.ASCII)
_BOM = codecs.BOM_UTF8


def python_text_problem(data: bytes) -> str | None:
    """Why Python could not read this source (translated, naming the line), or None."""
    declared = _declared(data)
    encoding = "utf-8-sig"
    if declared is not None:
        line, name = declared
        try:
            encoding = codecs.lookup(name).name
        except LookupError:
            return _(
                "line %(line)s: Python does not know the encoding %(encoding)s",
                line=line,
                encoding=name,
            )
        if data.startswith(_BOM) and encoding != "utf-8":
            return _(
                "line %(line)s: the file starts with a UTF-8 byte order mark but declares "
                "%(encoding)s",
                line=line,
                encoding=name,
            )
    try:
        data.decode(encoding)
    except UnicodeDecodeError as exc:
        at = exc.start + (len(_BOM) if encoding == "utf-8-sig" and data.startswith(_BOM) else 0)
        line_number = data.count(b"\n", 0, at) + 1
        byte = f"0x{data[at]:02x}"
        if declared is None:
            return _(
                "line %(line)s: byte %(byte)s is not valid UTF-8 and the file declares no "
                "other encoding (add a line such as # -*- coding: cp1252 -*- at the top, or "
                "save it as UTF-8)",
                line=line_number,
                byte=byte,
            )
        return _(
            "line %(line)s: byte %(byte)s is not valid %(encoding)s, the encoding the file "
            "declares on line %(declared)s",
            line=line_number,
            byte=byte,
            encoding=declared[1],
            declared=declared[0],
        )
    try:  # what Python itself does with the first two lines, should the rules above differ
        tokenize.detect_encoding(io.BytesIO(data).readline)
    except SyntaxError as exc:
        return _("line 1: Python cannot read this file: %(reason)s", reason=str(exc))
    return None


def _declared(data: bytes) -> tuple[int, str] | None:
    """The line (1 or 2) and name of the file's PEP 263 declaration, if it has one."""
    for number, line in enumerate(data.splitlines()[:2], start=1):
        match = _COOKIE.match(line.removeprefix(_BOM) if number == 1 else line)
        if match:
            return number, match.group(1).decode("ascii")
        if line.strip() and not line.lstrip().startswith(b"#"):
            return None  # only a comment or blank first line lets the second declare it
    return None


def with_compatibility(
    settings: dict[str, Any] | None, kind: str, data: bytes, version: int
) -> dict[str, Any]:
    """A script's settings with what to keep about this version: the commands wine lacks."""
    return {**(settings or {}), COMPATIBILITY_KEY: compatibility(kind, data, version)}


def compatibility(kind: str, data: bytes, version: int) -> dict[str, Any]:
    """What to keep with the script about this version: the commands wine lacks."""
    lacks = (
        unavailable_commands(data.decode(bat_encoding(data), "replace")) if kind == "batch" else []
    )
    return {"version": version, "wine_lacks": lacks}


def warnings(settings: dict[str, Any] | None, version: int) -> list[str]:
    """The script's warnings for this worker, in the reader's language: on Linux (wine), each
    command of its current version that wine lacks or only stubs."""
    found = (settings or {}).get(COMPATIBILITY_KEY) or {}
    if sys.platform == "win32" or found.get("version") != version:
        return []
    return [
        _(
            "%(command)s is not available on this Linux worker (wine); run this script on a "
            "Windows worker",
            command=command,
        )
        for command in found.get("wine_lacks") or []
    ]


def text_of(kind: str, data: bytes) -> tuple[str, str]:
    """The script's text for a page, read in its real encoding, and that encoding."""
    if kind == "batch":
        encoding = bat_encoding(data)
    else:
        declared = _declared(data)
        encoding = "utf-8-sig"
        if declared is not None:
            try:
                encoding = codecs.lookup(declared[1]).name
            except LookupError:
                pass
    return data.decode(encoding, "replace"), encoding


def bytes_of(kind: str, text: str, encoding: str) -> bytes:
    """Edited text back to bytes: a .py in the encoding its text declares, a .bat in the one it
    was in (UTF-8 when the new text has characters that encoding lacks)."""
    if kind != "batch":
        head = "\n".join(text.splitlines()[:2]).encode("ascii", "replace")
        declared = _declared(head)
        encoding = "utf-8"
        if declared is not None:
            try:
                encoding = codecs.lookup(declared[1]).name
            except LookupError:
                pass
    try:
        return text.encode(encoding.removesuffix("-sig"))
    except (UnicodeEncodeError, LookupError):
        return text.encode("utf-8")
