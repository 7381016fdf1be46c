"""Control characters made visible in plain text that leaves ScriptFlow (output.txt, emails).

A script's output is the script author's text. Opened in a terminal (`cat run.txt`) or a mail
reader, ESC sequences can rewrite the screen or the window title, BEL rings, a carriage return
hides what came before it on the line, and bidi overrides (U+202A-202E, U+2066-2069) show text
in another order than it is stored (CVE-2021-42574). Each is written out as an escape
(`\\x1b`, `\\u202e`) instead: the text stays readable and nothing is lost."""

from __future__ import annotations

import re

# C0 but tab and line feed (the line structure of the text), DEL, C1, the bidi controls.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def neutralise(text: str) -> str:
    """`text` with every control character but tab and newline written as an escape."""
    return _CONTROL.sub(_escape, text)
