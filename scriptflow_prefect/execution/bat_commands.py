"""Which commands of a .bat a Linux worker's wine cannot run, found before the script starts.

`WINE_LACKS` was measured with wine 8.0 (Debian 8.0~repack-4), in a fresh prefix, under the
locale the worker uses (wine.py): each command ran from a .bat in a folder holding src\\file.txt
and file.txt, and its output, exit code and effect (files copied, time waited) were checked.
`missing`: cmd answers "Can't recognize ..." (errorlevel 9009). `stub`: the program exists and
does nothing (robocopy copies nothing and ends 16; findstr, where, tasklist, fc, choice,
icacls, powershell, certutil, setx, mklink, systeminfo print nothing and end 0). Commands that
did their job under wine (xcopy, copy, move, del, rmdir, ping, reg, attrib, more, find without
switches, taskkill, hostname, whoami, ipconfig, netstat, start /wait, expand, net start/stop)
are not listed. `find` with a switch (/i /c /v /n) answers "Invalid switch"; `net` knows only
start, stop and use (it prints its help and ends 0 for user, share, time, view, localgroup),
and `net use` cannot map a network drive.

The scan looks at command positions only (a line's first word, after `&`, `&&`, `||`, `|`,
`(`, `do`, `else`, `call`, `start`, an `if` condition), so `echo use robocopy` and
`set timeout=5` are not taken for commands; `rem` and `::` lines are skipped.
"""

from __future__ import annotations

import re

MISSING = "missing"
STUB = "stub"
WINE_LACKS: dict[str, str] = {
    **dict.fromkeys(
        (
            "bcdedit bitsadmin cipher clip comp compact curl driverquery eventcreate forfiles "
            "getmac gpresult logoff mountvol msg nslookup openfiles pnputil qwinsta replace "
            "route runas sort tar takeown timeout tracert tree typeperf vssadmin w32tm waitfor "
            "wbadmin"
        ).split(),
        MISSING,
    ),
    **dict.fromkeys(
        (
            "cacls certutil choice fc findstr icacls mklink mshta netsh powershell robocopy "
            "schtasks setx systeminfo tasklist wevtutil where wmic sc fsutil"
        ).split(),
        STUB,
    ),
}
_NET_WORKS = {"start", "stop"}
_EXTENSIONS = (".exe", ".com")
_SPLIT = re.compile(r"&&|\|\||[&|()]")
_IF_CONDITION = re.compile(
    r"""^if\s+(?:/i\s+)?(?:not\s+)?
        (?:exist\s+(?:"[^"]*"|\S+)
          |defined\s+\S+
          |errorlevel\s+\S+
          |cmdextversion\s+\S+
          |(?:"[^"]*"|\S+?)\s*==\s*(?:"[^"]*"|\S+)
          |(?:"[^"]*"|\S+)\s+(?:equ|neq|lss|leq|gtr|geq)\s+(?:"[^"]*"|\S+))\s*""",
    re.IGNORECASE | re.VERBOSE,
)
_START_OPTION = re.compile(r'^(?:"[^"]*"\s*|/\S+\s*)')
_SET_P = re.compile(r"set\s+/p", re.IGNORECASE)


def unavailable_commands(text: str) -> list[str]:
    """The commands of this .bat that wine lacks or only stubs, in order of first use."""
    found: list[str] = []
    for command in _commands(text):
        name = _lacking(command)
        if name and name not in found:
            found.append(name)
    return found


def reads_keyboard(text: str) -> bool:
    """Whether this .bat asks for typed input with `set /p` (`pause` shows in its output)."""
    return any(_SET_P.match(command) for command in _commands(text))


def _commands(text: str) -> list[str]:
    """Each command of the file, from its name on, at the positions where cmd runs one."""
    return [
        command
        for line in _logical_lines(text)
        for segment in _segments(line)
        if (command := _command_of(segment))
    ]


def _logical_lines(text: str) -> list[str]:
    # A ^ at a line's end continues it on the next line.
    joined = re.sub(r"\^\r?\n", "", text)
    lines = []
    for raw in joined.splitlines():
        line = raw.strip().lstrip("@").strip()
        lowered = line.lower()
        if not line or line.startswith(("::", ":")) or re.match(r"rem(\s|$)", lowered):
            continue
        lines.append(line)
    return lines


def _segments(line: str) -> list[str]:
    """The parts of a line between & && || | and block parentheses, outside quotes. A "(" is
    a block only where a command may start (`if ... (`, `do (`, `else (`, a line's start), and
    ")" is text inside an echo: `echo Done (robocopy)` is one segment."""
    parts: list[str] = []
    current = ""
    quoted = False
    i = 0
    while i < len(line):
        char = line[i]
        if char == '"':
            quoted = not quoted
        elif not quoted:
            match = _SPLIT.match(line, i)
            if match and _splits(match.group(), current):
                parts.append(current)
                current = ""
                i = match.end()
                continue
        current += char
        i += 1
    parts.append(current)
    return [p.strip() for p in parts if p.strip()]


def _splits(separator: str, current: str) -> bool:
    text = current.strip().lstrip("@").strip().lower()
    if separator == "(":
        return (
            not text
            or text in ("else", "do")
            or text.endswith((" do", " else"))
            or bool(_IF_CONDITION.fullmatch(current.strip()))
        )
    if separator == ")":
        return not (text.startswith("echo") or text.startswith("set"))
    return True


def _command_of(segment: str) -> str | None:
    """The command this segment runs (its name and arguments), None for echo text."""
    rest = segment.lstrip("@").strip()
    while rest:
        lowered = rest.lower()
        if re.match(r"(echo|rem)(\W|$)", lowered):
            return None  # the rest is text
        after = _after_prefix(rest, lowered)
        if after is None or after == rest:
            return after
        rest = after
    return None


def _after_prefix(rest: str, lowered: str) -> str | None:
    """What follows a leading if-condition, `for ... do`, else, call, do or start (with its
    title and options); `rest` itself when it has none; None for an unreadable if/for."""
    if re.match(r"if[\s/]", lowered):
        match = _IF_CONDITION.match(rest)
        return rest[match.end() :] if match else None
    if re.match(r"for[\s/]", lowered):
        at = re.search(r"\sdo\s", rest, re.IGNORECASE)
        return rest[at.end() :].strip() if at else None
    for prefix in ("else ", "call ", "do "):
        if lowered.startswith(prefix):
            return rest[len(prefix) :].strip()
    if lowered.startswith("start "):
        rest = rest[6:].strip()
        while (option := _START_OPTION.match(rest)) is not None:
            rest = rest[option.end() :]
    return rest


def _lacking(command: str) -> str | None:
    words = command.split()
    if not words:
        return None
    name = words[0].strip('"').replace("/", "\\").rsplit("\\", 1)[-1].lower()
    for extension in _EXTENSIONS:
        name = name.removesuffix(extension)
    if name in WINE_LACKS:
        return name
    switches = [w.lower() for w in words[1:] if w.startswith("/")]
    if name == "find" and switches:
        return f"find {' '.join(switches)}"
    if name == "net" and len(words) > 1 and words[1].lower() not in _NET_WORKS:
        return f"net {words[1].lower()}"
    return None
