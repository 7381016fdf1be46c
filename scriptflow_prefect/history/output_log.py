"""The per-run output file: every line a script printed, with when and on which stream.

One record per output line, UTF-8::

    2024-05-01T09:00:00.123456Z<TAB>stdout<TAB>the text as printed

Only ``\\n`` ends a record, so text may hold tabs and carriage returns. Readers page through
the file by byte offset (history/output.py) and never see a record the writer has not finished.

On a full disk (or short of the reserve, platform/disk_space.py) the writer cuts the file back
to its last whole record and fails every later write with DiskFull: the caller stops the
script, and the file stays readable up to there.

Example::

    with OutputLogWriter(run_dir / "output.log") as log:
        run_script_process(..., on_line=None, on_lines=log.write_lines)
    with open_source(run_dir / "output.log", run_dir / "output.log.gz", None) as src:
        lines, cursor, more = lines_after(src, after=0, limit=200)  # history/output.py
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

from scriptflow_prefect.platform.disk_space import DiskFull, check_room, free_bytes, is_full

FLUSH_SECONDS = 0.05
_O_BINARY = getattr(os, "O_BINARY", 0)  # Windows would otherwise translate \n to \r\n
_FLUSH_BYTES = 1 << 16


def format_ts(ts: datetime) -> str:
    """ISO 8601 in UTC with microseconds and a Z; a naive datetime is taken as UTC."""
    ts = ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)
    return ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class OutputLogWriter:
    """Appends records to the output file; safe to share between threads.

    Records are buffered for at most FLUSH_SECONDS (a background thread writes them out), so a
    reader elsewhere sees a new line within ~100 ms while a flood of lines still costs few
    system calls. Each flush writes whole records only.
    """

    def __init__(self, path: Path, *, flush_seconds: float = FLUSH_SECONDS) -> None:
        self.path = Path(path)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | _O_BINARY, 0o644)
        self._size = os.fstat(self._fd).st_size  # where the last whole record ends
        # Why output stopped being kept (DiskFull, or another OSError); set once, then every
        # write raises it. close() does not: the caller reads it here.
        self.failure: OSError | None = None
        self._flush_seconds = flush_seconds
        self._lock = threading.Lock()
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._dirty = threading.Event()
        self._closed = False
        self._last_prefix: tuple[tuple[datetime, str] | None, str] = (None, "")
        self._flusher = threading.Thread(target=self._flush_loop, name="output-log", daemon=True)
        self._flusher.start()

    def write(self, ts: datetime, stream: str, text: str) -> None:
        """One line of output (text holding newlines becomes several records)."""
        if "\n" in text:
            self.write_lines(ts, stream, text.split("\n"))
        else:
            self._append((self._prefix(ts, stream) + text + "\n").encode("utf-8", "replace"))

    def write_lines(self, ts: datetime, stream: str, lines: Sequence[str]) -> None:
        """Several lines with one timestamp: the fast path for a chunk of output."""
        if not lines:
            return
        prefix = self._prefix(ts, stream)
        body = ("\n" + prefix).join(lines)
        if body.count("\n") != len(lines) - 1:
            body = ("\n" + prefix).join(_split_newlines(lines))
        self._append((prefix + body + "\n").encode("utf-8", "replace"))

    def _prefix(self, ts: datetime, stream: str) -> str:
        # The engine gives all lines of one read the same timestamp: format it once.
        key, prefix = self._last_prefix
        if key != (ts, stream):
            if not stream or "\t" in stream or "\n" in stream:
                raise ValueError(f"Unusable stream name: {stream!r}")
            prefix = f"{format_ts(ts)}\t{stream}\t"
            self._last_prefix = ((ts, stream), prefix)
        return prefix

    def flush(self) -> None:
        with self._lock:
            self._write_pending()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._dirty.set()
        self._flusher.join()
        with self._lock:
            try:
                self._write_pending()
            except OSError:
                pass  # kept in self.failure
            finally:
                os.close(self._fd)

    def __enter__(self) -> OutputLogWriter:
        return self

    def __exit__(
        self,
        _exc_type: type[BaseException] | None,
        _exc: BaseException | None,
        _traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _append(self, data: bytes) -> None:
        with self._lock:
            if self._closed:
                raise ValueError("write to a closed OutputLogWriter")
            if self.failure is not None:
                raise self.failure
            self._pending.append(data)
            self._pending_bytes += len(data)
            if self._pending_bytes >= _FLUSH_BYTES:
                self._write_pending()
            elif not self._dirty.is_set():
                self._dirty.set()

    def _write_pending(self) -> None:
        # Called with the lock held. Once closed, `_dirty` stays set so the flusher ends.
        if not self._closed:
            self._dirty.clear()
        if not self._pending:
            return
        data = b"".join(self._pending)
        self._pending.clear()
        self._pending_bytes = 0
        if self.failure is not None:
            raise self.failure
        try:
            check_room(self.path.parent, len(data))
            view = memoryview(data)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
        except OSError as exc:
            self.failure = self._failed(exc)
            raise self.failure from None
        self._size += len(data)

    def _failed(self, exc: OSError) -> OSError:
        # A write cut short by ENOSPC leaves part of a record: cut back to the last whole one
        # (truncating needs no room), so readers and the index see whole records only.
        try:
            os.ftruncate(self._fd, self._size)
        except OSError:
            pass
        if isinstance(exc, DiskFull) or not is_full(exc):
            return exc
        try:
            free = free_bytes(self.path.parent)[0]
        except OSError:
            free = 0
        return DiskFull(self.path.parent, free)

    def _flush_loop(self) -> None:
        while True:
            self._dirty.wait()
            if self._closed:
                return
            time.sleep(self._flush_seconds)  # lets the next few ms of lines join this write
            try:
                self.flush()
            except OSError:
                return  # kept in self.failure: the next write raises it to the caller


def _split_newlines(lines: Iterable[str]) -> Iterator[str]:
    for text in lines:
        yield from text.split("\n")


def parse_record(raw: bytes) -> dict[str, str]:
    parts = raw.decode("utf-8", "replace").split("\t", 2)
    if len(parts) < 3:  # not written by OutputLogWriter; keep the text rather than fail
        return {"ts": "", "stream": "", "text": raw.decode("utf-8", "replace")}
    ts, stream, text = parts
    return {"ts": ts, "stream": stream, "text": text}
