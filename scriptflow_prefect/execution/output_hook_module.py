"""Installed into every script virtualenv as `scriptflow_ordered_output` (output_hook.py), with a
.pth line that imports it when the script's Python starts. Runs inside the script's own
Python (any version from 3.8), so it imports nothing but the standard library.

When the runner passes an inherited pipe in SF_ORDERED_OUTPUT_FD, sys.stdout and sys.stderr
become writers that send (stream, bytes) records down that one pipe, so the runner reads what
the script printed to both in the order it was printed. A record: one byte for the stream
(1 stdout, 2 stderr), four for the length (big-endian), the bytes; one os.write per record of
at most PIPE_BUF bytes, which the kernel never splits, so threads and forked children need no
lock. The text layer is line-buffered (sent at each newline or carriage return, on flush(),
at exit); before writing, a stream first sends what the other one holds back, so a partial
line printed before a traceback still comes first. Measured: as fast as `python -u` writing
to a plain pipe. Without the variable (Python started outside ScriptFlow) nothing changes.
fileno() is still 1 or 2, so a child process handed sys.stdout writes to the plain pipes.
"""

from __future__ import annotations

import io
import os
import stat
import sys

_VARIABLE = "SF_ORDERED_OUTPUT_FD"
_MAX_PAYLOAD = 4096 - 5  # PIPE_BUF on Linux, less the record's header


class _RecordWriter(io.RawIOBase):
    """The raw layer under sys.stdout or sys.stderr: each write becomes records of one stream."""

    def __init__(self, channel: int, stream: int, fd: int) -> None:
        super().__init__()
        self._channel = channel
        self._stream = bytes([stream])
        self._fd = fd
        self.partner: io.TextIOWrapper | None = None  # the other stream's text layer
        self.last: list[bytes] = [b""]  # shared by both writers: the stream written last

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        if self.last[0] != self._stream:
            self.last[0] = self._stream
            if self.partner is not None:
                self.partner.flush()  # what it holds back was written before this
            self.last[0] = self._stream
        size = len(data)
        if size <= _MAX_PAYLOAD:
            record = self._stream + size.to_bytes(4, "big") + data
            while record:
                record = record[os.write(self._channel, record) :]
            return size
        view = memoryview(data)
        for start in range(0, size, _MAX_PAYLOAD):
            self.write(view[start : start + _MAX_PAYLOAD])  # type: ignore[arg-type]
        return size

    def fileno(self) -> int:
        return self._fd

    def isatty(self) -> bool:
        return False

    def close(self) -> None:
        """The fds belong to the process, not to this object."""


def _writer(raw: _RecordWriter, old: io.TextIOWrapper) -> io.TextIOWrapper:
    return io.TextIOWrapper(
        raw,  # type: ignore[arg-type]
        encoding=old.encoding,
        errors=old.errors,
        newline="\n",
        line_buffering=True,
    )


def _install() -> None:
    value = os.environ.pop(_VARIABLE, "")  # the script's own children do not get it
    if not value.isdigit():
        return
    fd = int(value)
    try:
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            return
        old_out, old_err = sys.stdout, sys.stderr
        if not isinstance(old_out, io.TextIOWrapper) or not isinstance(old_err, io.TextIOWrapper):
            return
        old_out.flush()
        old_err.flush()
        out_raw = _RecordWriter(fd, 1, old_out.fileno())
        err_raw = _RecordWriter(fd, 2, old_err.fileno())
    except (OSError, ValueError):
        return
    os.set_inheritable(fd, False)
    err_raw.last = out_raw.last
    out, err = _writer(out_raw, old_out), _writer(err_raw, old_err)
    out_raw.partner, err_raw.partner = err, out
    sys.stdout, sys.stderr = out, err
    # `sys.stdout = sys.__stdout__` (undoing a redirection) keeps the order too.
    setattr(sys, "__stdout__", out)  # noqa: B010 - mypy: a Final name
    setattr(sys, "__stderr__", err)  # noqa: B010


_install()
