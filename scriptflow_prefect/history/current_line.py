"""The line a running script is writing right now (a progress bar redrawn with ``\\r``, a
prompt without newline), for the live view: a small side file next to the run's output file,
rewritten at most a few times a second, removed when the run ends.

The output file keeps finished lines only (a progress bar's final state); this file is what a
terminal would show below them at this moment.

Example::

    with CurrentLineFile(outputs_dir / f"{run_id}.current.json") as current:
        run_script_process(..., on_current=current.update)
    read_current(outputs_dir / f"{run_id}.current.json")   # {"stream": "stderr", "text": "50%"}
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

MIN_INTERVAL_SECONDS = 0.2
MAX_TEXT = 2000


def current_path(outputs_dir: Path, run_id: object) -> Path:
    return Path(outputs_dir) / f"{run_id}.current.json"


class CurrentLineFile:
    """Keeps the side file in step with `update(stream, text | None)` calls, without writing
    more than once per MIN_INTERVAL_SECONDS (a timer writes the last state it missed)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._lines: dict[str, str] = {}
        self._written_at = 0.0
        self._timer: threading.Timer | None = None
        self._closed = False

    def update(self, stream: str, text: str | None) -> None:
        with self._lock:
            if text is None:
                self._lines.pop(stream, None)
            else:
                self._lines.pop(stream, None)  # the stream written last comes last
                self._lines[stream] = text[-MAX_TEXT:]
            wait = self._written_at + MIN_INTERVAL_SECONDS - time.monotonic()
            if wait <= 0:
                self._write()
            elif self._timer is None and not self._closed:
                self._timer = threading.Timer(wait, self._write_later)
                self._timer.daemon = True
                self._timer.start()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._timer is not None:
                self._timer.cancel()
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    def __enter__(self) -> CurrentLineFile:
        return self

    def __exit__(
        self,
        _exc_type: type[BaseException] | None,
        _exc: BaseException | None,
        _traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _write_later(self) -> None:
        with self._lock:
            self._timer = None
            if not self._closed:
                self._write()

    def _write(self) -> None:
        # Called with the lock held.
        self._written_at = time.monotonic()
        if not self._lines:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            return
        stream, text = next(reversed(self._lines.items()))
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            tmp.write_text(json.dumps({"stream": stream, "text": text}), encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError:
            # A live view only (a full disk, say): the run goes on and the output file says
            # what matters; no line in progress is shown rather than a stale one.
            for leftover in (tmp, self.path):
                with contextlib.suppress(OSError):
                    leftover.unlink()


def read_current(path: Path) -> dict[str, Any] | None:
    """The line in progress, {"stream", "text"}, or None (no run, or no line in progress)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if isinstance(data, dict) and isinstance(data.get("text"), str):
        return {"stream": str(data.get("stream", "stdout")), "text": data["text"]}
    return None
