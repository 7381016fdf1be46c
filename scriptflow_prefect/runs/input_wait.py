"""Whether a failed run died waiting for keyboard input: its stdin is closed (nobody types
into a scheduled run), so Python's input() raises EOFError, and a .bat's `pause` or `set /p`
goes on at once with nothing typed (measured with wine 8: pause prints "Press any key to
continue... " and returns, set /p leaves the variable unchanged).

Example::

    watch = InputWait("python", "")
    watch.lines("stderr", ["EOFError: EOF when reading a line"])
    watch.seen   # True: the run's message says "remove input()/pause"
"""

from __future__ import annotations

from collections.abc import Sequence

from scriptflow_prefect.execution.bat_commands import reads_keyboard

# What the script's output shows when it waited: Python's traceback, pause's prompt (wine,
# English and Brazilian Portuguese Windows).
SIGNS = ("EOFError", "Press any key to continue", "Pressione qualquer tecla para continuar")


class InputWait:
    """Watches a run's output lines for the signs; a .bat that reads the keyboard with
    `set /p` (no output sign) counts from its text."""

    def __init__(self, kind: str, script_text: str) -> None:
        self.seen = kind == "batch" and reads_keyboard(script_text)

    def lines(self, _stream: str, texts: Sequence[str]) -> None:
        if not self.seen:
            self.seen = any(text.startswith(SIGNS) for text in texts)
