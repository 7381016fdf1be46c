"""A script's output: pipes read in big chunks, split into lines, decoded, handed on in batches.

Lines are split on ``\\n`` (one trailing ``\\r`` stripped), empty lines kept, a final line
without newline still delivered; a "line" longer than MAX_LINE_BYTES comes in pieces."""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import IO

from scriptflow_prefect.execution.models import LineCallback, LinesCallback

if sys.platform == "win32":
    from scriptflow_prefect.execution.windows import read_pipe
else:
    from scriptflow_prefect.execution.posix import read_pipe

# After the tree is gone, how long to wait for pipe EOF: wine's shared wineserver keeps the
# stderr pipe open for a few seconds, yet everything the script wrote is already in the pipe.
DRAIN_GRACE_SECONDS = 0.25
MAX_LINE_BYTES = 1 << 20


class Sink:
    """Hands lines to the caller's callbacks, one batch at a time, and never after close."""

    def __init__(self, on_line: LineCallback | None, on_lines: LinesCallback | None) -> None:
        self._on_line = on_line
        self._on_lines = on_lines
        self._lock = threading.Lock()
        self._closed = False
        self.error: BaseException | None = None

    def emit(self, ts: datetime, stream: str, lines: Sequence[str]) -> None:
        with self._lock:
            if self._closed or self.error is not None:
                return
            try:
                if self._on_lines is not None:
                    self._on_lines(ts, stream, lines)
                if self._on_line is not None:
                    for text in lines:
                        self._on_line(ts, stream, text)
            except BaseException as exc:  # handed back to the caller's thread
                self.error = exc

    def fail(self, exc: BaseException) -> None:
        with self._lock:
            self.error = self.error or exc

    def close(self) -> None:
        with self._lock:
            self._closed = True


class Decoder:
    """UTF-8; with a fallback encoding, a line that is not UTF-8 is read in that one."""

    def __init__(self, fallback: str | None) -> None:
        self._fallback = fallback

    def __call__(self, data: bytes) -> str:
        if self._fallback is None:
            return data.decode("utf-8", "replace")
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return "\n".join(self._line(part) for part in data.split(b"\n"))

    def _line(self, data: bytes) -> str:
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return data.decode(self._fallback or "utf-8", "replace")


class StreamReader:
    """Reads one pipe in its own thread, in big chunks, and emits whole lines."""

    def __init__(self, pipe: IO[bytes] | None, stream: str, sink: Sink, decode: Decoder):
        assert pipe is not None
        self._pipe = pipe
        self._stream = stream
        self._sink = sink
        self._decode = decode
        self._tail = b""
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"scriptflow-{stream}-reader", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def stop(self) -> None:
        """Read what is already in the pipe, then stop, even if someone still holds it open."""
        self._stop.set()

    def _run(self) -> None:
        try:
            read_pipe(self._pipe.fileno(), self._feed, self._stop)
            self._flush_tail()
        except BaseException as exc:
            # A reader that stops would leave the script blocked on a full pipe: stop the run.
            self._sink.fail(exc)
        finally:
            with contextlib.suppress(OSError):
                self._pipe.close()

    def _feed(self, data: bytes) -> None:
        ts = datetime.now(UTC)
        if self._tail:
            data = self._tail + data
        cut = data.rfind(b"\n")
        if cut < 0:
            self._tail = data
            if len(data) > MAX_LINE_BYTES:
                self._flush_tail(ts)
            return
        self._tail = data[cut + 1 :]
        # Decoded with its last newline, so that a "\r\n" there is seen as one too.
        lines = self._decode(data[: cut + 1]).replace("\r\n", "\n").split("\n")
        lines.pop()  # the empty string after the last newline
        self._sink.emit(ts, self._stream, lines)
        if len(self._tail) > MAX_LINE_BYTES:
            self._flush_tail(ts)  # may cut a multi-byte character in two: rare, and harmless

    def _flush_tail(self, ts: datetime | None = None) -> None:
        if not self._tail:
            return
        text = self._decode(self._tail)
        self._tail = b""
        if text.endswith("\r"):
            text = text[:-1]
        self._sink.emit(ts or datetime.now(UTC), self._stream, [text])


def finish_readers(readers: list[StreamReader]) -> None:
    """Let the readers reach EOF for a moment, then make them stop at what is in the pipes."""
    deadline = time.monotonic() + DRAIN_GRACE_SECONDS
    for reader in readers:
        reader.join(max(0.0, deadline - time.monotonic()))
    for reader in readers:
        reader.stop()
    for reader in readers:
        reader.join(5.0)
