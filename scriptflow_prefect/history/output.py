"""A run's stored output, read in windows: the plain file while the run runs, block-gzip after.

Two forms of the same bytes (records as written by output_log.OutputLogWriter):

- ``<run id>.log``: the plain file, appended to while the run runs;
- ``<run id>.log.gz``: once a finished run's output is indexed (history_index.py), if it is at
  least COMPRESS_MIN bytes: one gzip member per block of whole lines (at most BLOCK_BYTES each,
  or one longer line). ``gzip -dc`` gives the plain file back. The block table (where each
  block starts in the plain bytes and in the .gz) is kept in the history catalog.

Why compress, and why in blocks: run output is repetitive text that shrinks 5-10 times, and
the retention window keeps 30 days of it on a small disk. A cursor is a byte offset in the
plain bytes, so it stays valid when the file is compressed under a reader's feet, and any
window costs inflating one or two 64 KiB blocks: paging, "load earlier", jumps and the
search-hit line stay instant on a 1 M-line output.

Every function here takes a `Source` (plain or compressed) and returns lines as
``{"at": byte offset, "ts", "stream", "text"}``.

Example::

    with open_source(plain_path, gz_path, blocks) as src:
        lines, nxt, more = lines_after(src, 0, 200)
"""

from __future__ import annotations

import bisect
import contextlib
import gzip
import os
import zlib
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from scriptflow_prefect.history.output_log import parse_record

BLOCK_BYTES = 64 * 1024
COMPRESS_MIN = BLOCK_BYTES  # smaller outputs stay plain: nothing worth saving
GZIP_LEVEL = 3  # ~6x smaller on typical logs at ~60 MB/s here; level 6 is 2x slower for ~5 % less
READ_CHUNK = 256 * 1024
TRACEBACK = "Traceback (most recent call last):"


class CursorError(ValueError):
    """A cursor that is not at the start of a line of this output."""


@dataclass(frozen=True)
class Block:
    n: int
    offset: int  # in the plain bytes
    size: int
    line: int  # number of lines before this block
    gz_offset: int | None = None
    gz_size: int | None = None


# -- sources ---------------------------------------------------------------------------------


class PlainSource:
    def __init__(self, path: Path):
        self._fh = open(path, "rb")  # noqa: SIM115 (closed by close())
        self.size = os.fstat(self._fh.fileno()).st_size

    def read(self, start: int, length: int) -> bytes:
        self._fh.seek(start)
        return self._fh.read(length)

    def close(self) -> None:
        self._fh.close()


class GzipSource:
    """Random access into a block-gzip file through its block table."""

    def __init__(self, path: Path, blocks: list[Block]):
        self._fh = open(path, "rb")  # noqa: SIM115
        self._blocks = blocks
        self._starts = [b.offset for b in blocks]
        self.size = blocks[-1].offset + blocks[-1].size if blocks else 0
        self._cache: OrderedDict[int, bytes] = OrderedDict()

    def _block(self, i: int) -> bytes:
        data = self._cache.get(i)
        if data is None:
            b = self._blocks[i]
            self._fh.seek(b.gz_offset or 0)
            data = zlib.decompress(self._fh.read(b.gz_size or 0), wbits=31)
            self._cache[i] = data
            if len(self._cache) > 4:
                self._cache.popitem(last=False)
        return data

    def read(self, start: int, length: int) -> bytes:
        out = []
        end = min(start + length, self.size)
        i = bisect.bisect_right(self._starts, start) - 1
        while start < end and 0 <= i < len(self._blocks):
            b = self._blocks[i]
            data = self._block(i)
            piece = data[start - b.offset : end - b.offset]
            out.append(piece)
            start += len(piece)
            i += 1
        return b"".join(out)

    def close(self) -> None:
        self._fh.close()


@contextlib.contextmanager
def open_source(plain: Path, gz: Path, blocks: list[Block] | None):
    """The plain file if it is there, else the compressed one (FileNotFoundError if neither).
    The plain file wins: it is complete whenever it exists, even mid-compression."""
    try:
        src: PlainSource | GzipSource = PlainSource(plain)
    except FileNotFoundError:
        if blocks is None:
            blocks = scan_blocks(gz)
        src = GzipSource(gz, blocks)
    try:
        yield src
    finally:
        src.close()


def scan_blocks(gz: Path) -> list[Block]:
    """Rebuild the block table of a .gz by inflating it once (when the catalog lost it)."""
    blocks: list[Block] = []
    offset = lines = gz_offset = 0
    with open(gz, "rb") as fh:
        data = fh.read()
    pos = 0
    while pos < len(data):
        d = zlib.decompressobj(wbits=31)
        plain = d.decompress(data[pos:])
        used = len(data) - pos - len(d.unused_data)
        blocks.append(Block(len(blocks), offset, len(plain), lines, gz_offset, used))
        offset += len(plain)
        lines += plain.count(b"\n")
        pos += used
        gz_offset = pos
    return blocks


# -- writing the compressed form --------------------------------------------------------------


def iter_blocks(path: Path) -> Iterator[tuple[int, int, bytes]]:
    """(offset, lines before, bytes) of each block of whole lines of a finished plain file."""
    offset = line = 0
    buf = b""
    with open(path, "rb") as fh:
        while True:
            chunk = fh.read(READ_CHUNK)
            buf += chunk
            while len(buf) >= BLOCK_BYTES or (not chunk and buf):
                cut = buf.rfind(b"\n", 0, BLOCK_BYTES)
                if cut < 0:  # one line longer than a block: it is a block of its own
                    cut = buf.find(b"\n")
                    if cut < 0:
                        if chunk:
                            break  # read on to the end of this line
                        cut = len(buf) - 1  # an unfinished last line: keep it as it is
                block, buf = buf[: cut + 1], buf[cut + 1 :]
                yield offset, line, block
                offset += len(block)
                line += block.count(b"\n")
            if not chunk:
                return


class GzipBlockWriter:
    """Appends one gzip member per block to `path` and remembers where each one went."""

    def __init__(self, path: Path):
        self._fh = open(path, "wb")  # noqa: SIM115
        self._pos = 0

    def add(self, data: bytes) -> tuple[int, int]:
        member = gzip.compress(data, compresslevel=GZIP_LEVEL, mtime=0)
        self._fh.write(member)
        start, self._pos = self._pos, self._pos + len(member)
        return start, len(member)

    def close(self) -> None:
        try:
            self._fh.flush()
            os.fsync(self._fh.fileno())
        finally:
            self._fh.close()  # even on a full disk: the caller removes the unfinished file


# -- reading windows -----------------------------------------------------------------------------


def _line(raw: bytes, at: int) -> dict:
    return {**parse_record(raw), "at": at}


def check_cursor(src, offset: int) -> None:
    if offset < 0 or offset > src.size:
        raise CursorError("cursor outside the output")
    if offset > 0 and src.read(offset - 1, 1) != b"\n":
        raise CursorError("cursor not at the start of a line")


def lines_after(src, after: int, limit: int) -> tuple[list[dict], int, bool]:
    """Up to `limit` complete lines from byte offset `after`; the offset after the last one;
    whether more complete lines may follow."""
    check_cursor(src, after)
    out: list[dict] = []
    pos, buf, read_at = after, b"", after
    while len(out) < limit:
        chunk = src.read(read_at, READ_CHUNK)
        if not chunk:
            break
        read_at += len(chunk)
        buf += chunk
        start = 0
        while len(out) < limit:
            end = buf.find(b"\n", start)
            if end < 0:
                break
            out.append(_line(buf[start:end], pos + start))
            start = end + 1
        buf, pos = buf[start:], pos + start
    more = len(out) >= limit and (b"\n" in buf or pos < src.size)
    return out, pos, more


def lines_before(src, before: int, limit: int) -> tuple[list[dict], int]:
    """Up to `limit` complete lines that end at byte offset `before`; the offset of the first."""
    check_cursor(src, before)
    buf, start = b"", before
    while start > 0 and buf.count(b"\n") <= limit:
        n = min(READ_CHUNK, start)
        buf = src.read(start - n, n) + buf
        start -= n
    if not buf:
        return [], before
    pieces = buf[:-1].split(b"\n")  # `before` is a line start: buf ends with "\n"
    if start > 0:  # the first piece may be the tail of an earlier line
        first = len(pieces[0]) + 1
        pieces, start = pieces[1:], start + first
    pieces = pieces[-limit:] if limit else []
    at = before - sum(len(p) + 1 for p in pieces)
    out = []
    for p in pieces:
        out.append(_line(p, at))
        at += len(p) + 1
    return out, (out[0]["at"] if out else before)


def _complete_chunks(src, start: int = 0) -> Iterator[tuple[int, bytes]]:
    """(offset, bytes) chunks of whole lines from `start` to the end."""
    pos, buf = start, b""
    while True:
        chunk = src.read(pos + len(buf), READ_CHUNK)
        if not chunk:
            return
        buf += chunk
        cut = buf.rfind(b"\n")
        if cut < 0:
            continue
        yield pos, buf[: cut + 1]
        pos += cut + 1
        buf = buf[cut + 1 :]


def find_lines(src, needle: str, max_hits: int = 1000) -> tuple[list[int], int]:
    """Offsets of the lines whose text contains `needle` (case-insensitive), the first
    `max_hits` of them, and how many lines match in all."""
    folded = needle.casefold()
    hits: list[int] = []
    total = 0
    for pos, chunk in _complete_chunks(src):
        text = chunk.decode("utf-8", "replace")
        if folded not in text.casefold():
            continue
        at = pos
        for raw in chunk.split(b"\n")[:-1]:
            parts = raw.split(b"\t", 2)
            body = parts[2] if len(parts) == 3 else raw
            if folded in body.decode("utf-8", "replace").casefold():
                total += 1
                if len(hits) < max_hits:
                    hits.append(at)
            at += len(raw) + 1
    return hits, total


_ERROR_MARKS = (b"\tstderr\t", TRACEBACK.encode())


def error_offset_in(chunk: bytes, base: int) -> int | None:
    """The offset of the first error line (a stderr line, or a traceback on any stream) in a
    chunk of whole lines that starts at `base`."""
    search_from = 0
    while True:
        found = [p for p in (chunk.find(m, search_from) for m in _ERROR_MARKS) if p >= 0]
        if not found:
            return None
        pos = min(found)
        start = chunk.rfind(b"\n", 0, pos) + 1
        end = chunk.find(b"\n", pos)
        record = parse_record(chunk[start:end])
        if record["stream"] == "stderr" or record["text"].startswith(TRACEBACK):
            return base + start
        search_from = end + 1


def first_error(src) -> int | None:
    for pos, chunk in _complete_chunks(src):
        hit = error_offset_in(chunk, pos)
        if hit is not None:
            return hit
    return None


def iter_text(src, lines_per_item: int = 2000) -> Iterator[str]:
    """The whole output as "<ts> <stream> <text>\\n" lines, a few thousand per item."""
    for _pos, chunk in _complete_chunks(src):
        batch = []
        for raw in chunk.split(b"\n")[:-1]:
            r = parse_record(raw)
            batch.append(f"{r['ts']} {r['stream']} {r['text']}\n")
            if len(batch) >= lines_per_item:
                yield "".join(batch)
                batch = []
        if batch:
            yield "".join(batch)
