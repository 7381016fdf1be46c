"""A script's output: pipes read in big chunks, split into lines, decoded, handed on in batches.

Lines are split on ``\\n`` (a ``\\r\\n`` counts as one), empty lines kept, a final line without
newline still delivered; a "line" longer than MAX_LINE_BYTES comes in pieces. A ``\\r`` inside
a line works as on a terminal: what follows it overwrites the line from its start, so a
progress bar is stored as its final state ("100%"), not as every state it went through. The
line being written (no newline yet) is reported as the current line while it changes.

Python scripts also get one ordered channel (output_hook.py): records of (stream, bytes) that
keep stdout and stderr in the order the script wrote them; `RecordReader` reads it."""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import IO

from scriptflow_prefect.execution.models import CurrentCallback, LineCallback, LinesCallback
from scriptflow_prefect.execution.output_hook import RECORD_HEADER, STDERR_RECORD, STDOUT_RECORD

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

    def __init__(
        self,
        on_line: LineCallback | None,
        on_lines: LinesCallback | None,
        on_current: CurrentCallback | None = None,
    ) -> None:
        self._on_line = on_line
        self._on_lines = on_lines
        self._on_current = on_current
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

    def current(self, stream: str, text: str | None) -> None:
        """The line `stream` is writing now (None: none), for a live view."""
        if self._on_current is None:
            return
        with self._lock:
            if self._closed or self.error is not None:
                return
            try:
                self._on_current(stream, text)
            except BaseException as exc:
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


def overwrite(text: str) -> str:
    """What a terminal shows for `text`: each ``\\r`` goes back to the line's start, and what
    follows overwrites what is there ("50%\\r100%" -> "100%", "abcdef\\rxy" -> "xycdef")."""
    if "\r" not in text:
        return text
    parts = text.split("\r")
    shown = parts[0]
    for part in parts[1:]:
        shown = part + shown[len(part) :]
    return shown


class LineSplitter:
    """One stream's bytes in, whole lines out (decoded, ``\\r`` applied); keeps the line in
    progress."""

    def __init__(self, decode: Decoder) -> None:
        self._decode = decode
        self._tail = b""

    def feed(self, data: bytes) -> list[str]:
        if self._tail:
            data = self._tail + data
        cut = data.rfind(b"\n")
        if cut < 0:
            self._tail = data
            self._collapse()
            return self.flush() if len(self._tail) > MAX_LINE_BYTES else []
        self._tail = data[cut + 1 :]
        # Decoded with its last newline, so that a "\r\n" there is seen as one too.
        text = self._decode(data[: cut + 1]).replace("\r\n", "\n")
        lines = text.split("\n")
        lines.pop()  # the empty string after the last newline
        if "\r" in text:
            lines = [overwrite(line) for line in lines]
        self._collapse()
        if len(self._tail) > MAX_LINE_BYTES:
            lines += self.flush()  # may cut a multi-byte character in two: rare, and harmless
        return lines

    def flush(self) -> list[str]:
        """The line in progress as a finished line (at EOF, or when it grew too long)."""
        if not self._tail:
            return []
        text = overwrite(self._decode(self._tail))
        self._tail = b""
        return [text]

    def current(self) -> str | None:
        """The line in progress as a terminal shows it now, None when there is none."""
        return overwrite(self._decode(self._tail)) if self._tail else None

    def _collapse(self) -> None:
        # A progress bar redrawn with "\r" and no newline would grow the tail with every
        # state: keep what a terminal shows, then the part after the last "\r".
        last = self._tail.rfind(b"\r")
        if last > 0 and b"\r" in self._tail[:last]:
            shown = overwrite(self._decode(self._tail[:last]))
            self._tail = shown.encode("utf-8") + self._tail[last:]


class PipeReader:
    """A thread that feeds what one pipe gives to `_feed`, until EOF or stop()."""

    def __init__(self, pipe: IO[bytes] | None, name: str, sink: Sink) -> None:
        assert pipe is not None
        self._pipe = pipe
        self._sink = sink
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

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
            self._finish()
        except BaseException as exc:
            # A reader that stops would leave the script blocked on a full pipe: stop the run.
            self._sink.fail(exc)
        finally:
            with contextlib.suppress(OSError):
                self._pipe.close()

    def _feed(self, data: bytes) -> None:
        raise NotImplementedError

    def _finish(self) -> None:
        raise NotImplementedError


class StreamReader(PipeReader):
    """Reads one pipe (stdout or stderr) in big chunks and emits whole lines."""

    def __init__(self, pipe: IO[bytes] | None, stream: str, sink: Sink, decode: Decoder):
        super().__init__(pipe, f"scriptflow-{stream}-reader", sink)
        self._stream = stream
        self._lines = LineSplitter(decode)
        self._shown: str | None = None

    def _feed(self, data: bytes) -> None:
        ts = datetime.now(UTC)
        lines = self._lines.feed(data)
        if lines:
            self._sink.emit(ts, self._stream, lines)
        self._show(self._lines.current())

    def _finish(self) -> None:
        lines = self._lines.flush()
        if lines:
            self._sink.emit(datetime.now(UTC), self._stream, lines)
        self._show(None)

    def _show(self, current: str | None) -> None:
        if current != self._shown:
            self._shown = current
            self._sink.current(self._stream, current)


class RecordReader(PipeReader):
    """Reads the ordered channel of a Python script: (stream, bytes) records, emitted as lines
    in the order they were written, stdout and stderr interleaved as the script wrote them; a
    partial line ends when the other stream writes."""

    def __init__(self, pipe: IO[bytes] | None, sink: Sink, decode: Decoder) -> None:
        super().__init__(pipe, "scriptflow-ordered-reader", sink)
        self._streams = {
            STDOUT_RECORD: ("stdout", LineSplitter(decode)),
            STDERR_RECORD: ("stderr", LineSplitter(decode)),
        }
        self._rest = b""
        self._last = STDOUT_RECORD
        self._shown: dict[str, str | None] = {"stdout": None, "stderr": None}

    def _feed(self, data: bytes) -> None:
        ts = datetime.now(UTC)
        buffer = self._rest + data if self._rest else data
        size, at = len(buffer), 0
        runs: list[tuple[int, list[bytes]]] = []  # consecutive records of one stream
        while size - at >= RECORD_HEADER:
            length = int.from_bytes(buffer[at + 1 : at + RECORD_HEADER], "big")
            end = at + RECORD_HEADER + length
            if end > size:
                break
            kind = buffer[at]
            if kind not in self._streams:
                raise ValueError(f"Unknown record {kind} on the ordered output channel")
            if runs and runs[-1][0] == kind:
                runs[-1][1].append(buffer[at + RECORD_HEADER : end])
            else:
                runs.append((kind, [buffer[at + RECORD_HEADER : end]]))
            at = end
        self._rest = buffer[at:]
        for kind, parts in runs:
            if kind != self._last:
                # A line the other stream left unfinished ("Your name: ") was written first:
                # it ends where this stream starts, as it would in a log.
                other, pending = self._streams[self._last]
                lines = pending.flush()
                if lines:
                    self._sink.emit(ts, other, lines)
                self._last = kind
            stream, splitter = self._streams[kind]
            lines = splitter.feed(b"".join(parts))
            if lines:
                self._sink.emit(ts, stream, lines)
        self._report_current()

    def _finish(self) -> None:
        for stream, splitter in self._streams.values():
            lines = splitter.flush()
            if lines:
                self._sink.emit(datetime.now(UTC), stream, lines)
            self._show(stream, None)

    def _report_current(self) -> None:
        for stream, splitter in self._streams.values():
            self._show(stream, splitter.current())

    def _show(self, stream: str, current: str | None) -> None:
        if current != self._shown[stream]:
            self._shown[stream] = current
            self._sink.current(stream, current)


def finish_readers(readers: Sequence[PipeReader]) -> None:
    """Let the readers reach EOF for a moment, then make them stop at what is in the pipes."""
    deadline = time.monotonic() + DRAIN_GRACE_SECONDS
    for reader in readers:
        reader.join(max(0.0, deadline - time.monotonic()))
    for reader in readers:
        reader.stop()
    for reader in readers:
        reader.join(5.0)
