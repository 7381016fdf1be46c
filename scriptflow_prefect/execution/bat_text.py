"""What a .bat file's text really is, and how to read what cmd writes back.

A .bat is UTF-8 (ASCII included) or in a legacy code page: Notepad's "ANSI" (cp1252 on a
Western Windows) or the console's OEM one (cp850 on a Brazilian or Western European one,
cp437 on a US one). A `chcp N` line in the file says which one the author ran it with; without
one, the bytes decide: cp1252 and cp850 put the accented letters on different bytes, and only
one reading gives words whose accented letters sit between letters of the same case.

Example::

    bat_encoding("concluída".encode("cp850"))   # "cp850"
    utf8_text(data)                              # the same text as UTF-8, for wine's cmd
"""

from __future__ import annotations

import re

UTF8 = "utf-8"
DEFAULT_LEGACY = "cp1252"
_CHCP = re.compile(rb"^[ \t@]*chcp(?:\.com)?[ \t]+(\d{3,5})\b", re.IGNORECASE | re.MULTILINE)
# Code pages a chcp line may name that Python reads; others are ignored as evidence.
_KNOWN_CODEPAGES = {437, 850, 852, 858, 860, 863, 865, 1250, 1252, 28591, 28605}
_CANDIDATES = ("cp1252", "cp850")


def is_utf8(data: bytes) -> bool:
    try:
        data.decode(UTF8)
    except UnicodeDecodeError:
        return False
    return True


def chcp_codepage(data: bytes) -> int | None:
    """The code page the last `chcp N` line of the file switches to, if any."""
    found = _CHCP.findall(data)
    return int(found[-1]) if found else None


def bat_encoding(data: bytes) -> str:
    """The encoding the file's text is in: "utf-8", or a legacy code page ("cp850", ...)."""
    if is_utf8(data):
        return UTF8
    named = chcp_codepage(data)
    if named in _KNOWN_CODEPAGES:
        return "latin-1" if named == 28591 else "iso8859-15" if named == 28605 else f"cp{named}"
    return max(_CANDIDATES, key=lambda encoding: _latin_score(data, encoding))


def _latin_score(data: bytes, encoding: str) -> int:
    """How much `data` read as `encoding` looks like words of a Latin-script language: +1 for
    each non-ASCII letter of the same case as the letter after it (or before it, at a word's
    end: "ação", "SÃO") or a capital starting a word ("Ótimo"), -1 for each other non-ASCII
    character ("aþÒo", "a├Ão"). Ties go to cp1252, Notepad's "ANSI"."""
    text = data.decode(encoding, "replace")
    score = 0
    for i, char in enumerate(text):
        if char.isascii():
            continue
        if not char.isalpha():
            score -= 1
            continue
        after = text[i + 1] if i + 1 < len(text) else " "
        before = text[i - 1] if i else " "
        neighbour = after if after.isalpha() else before if before.isalpha() else None
        if char.isupper() and not before.isalpha() and after.islower():
            score += 1  # a capital starting a word: "Ótimo"
        elif neighbour is None:
            score += char.islower()  # a one-letter word: "é", "à"
        else:
            score += 1 if neighbour.islower() == char.islower() else -1
    return score


def utf8_text(data: bytes) -> bytes | None:
    """The file as UTF-8, or None when it already is (nothing to rewrite)."""
    if is_utf8(data):
        return None
    return data.decode(bat_encoding(data), "replace").encode(UTF8)
