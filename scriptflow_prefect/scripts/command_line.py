"""Arguments typed as one line, the way Windows reads a command line.

A Task Scheduler user types ``--days 7 "D:\\x y"`` in "Add arguments"; Windows programs split
that with the Microsoft C runtime's rules, so the page does the same and shows the list it got:

- spaces and tabs separate arguments, except inside double quotes;
- ``2n`` backslashes before a ``"`` are ``n`` backslashes, and the quote opens or closes;
  ``2n+1`` backslashes before a ``"`` are ``n`` backslashes and a literal ``"``;
- backslashes not before a ``"`` are literal (``D:\\backups\\`` stays as it is);
- inside quotes, ``""`` is a literal ``"``; a quote left open runs to the end of the line.

Example::

    split_arguments('--days 7 "D:\\x y"')   # ['--days', '7', 'D:\\x y']
    join_arguments(['--days', '7', 'D:\\x y'])  # '--days 7 "D:\\x y"'
"""

from __future__ import annotations

from collections.abc import Sequence

# Windows separates on space and tab; a pasted line break separates too (the box is one line).
_SEPARATORS = " \t\r\n"


def split_arguments(line: str) -> list[str]:
    """The arguments of `line`, as a Windows program's `argv[1:]` would get them."""
    args: list[str] = []
    buf: list[str] = []
    in_arg = quoted = False
    i, n = 0, len(line)
    while i < n:
        c = line[i]
        if c in _SEPARATORS and not quoted:
            if in_arg:
                args.append("".join(buf))
                buf, in_arg = [], False
            i += 1
            continue
        in_arg = True
        if c == "\\":
            j = i
            while j < n and line[j] == "\\":
                j += 1
            count = j - i
            if j < n and line[j] == '"':
                buf.append("\\" * (count // 2))
                if count % 2:  # an escaped quote
                    buf.append('"')
                    j += 1
            else:
                buf.append("\\" * count)
            i = j
            continue
        if c == '"':
            if quoted and i + 1 < n and line[i + 1] == '"':
                buf.append('"')
                i += 2
                continue
            quoted = not quoted
            i += 1
            continue
        buf.append(c)
        i += 1
    if in_arg:
        args.append("".join(buf))
    return args


def join_arguments(args: Sequence[str]) -> str:
    """One line that `split_arguments` reads back as `args` (as subprocess.list2cmdline, also
    quoting arguments with line breaks)."""
    return " ".join(_quote(arg) for arg in args)


def _quote(arg: str) -> str:
    if arg and not any(c in _SEPARATORS or c == '"' for c in arg):
        return arg
    out: list[str] = []
    backslashes = 0
    for c in arg:
        if c == "\\":
            backslashes += 1
            continue
        if c == '"':
            out.append("\\" * (backslashes * 2 + 1) + '"')
        else:
            out.append("\\" * backslashes + c)
        backslashes = 0
    out.append("\\" * (backslashes * 2))  # doubled: they come before the closing quote
    return '"' + "".join(out) + '"'
