"""The per-run output file: writing it, and reading it back the way the run pages and the
output.txt download do (history.output: a source, pages by byte cursor, plain text)."""

from __future__ import annotations

import re
import threading
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from scriptflow_prefect.history.output import iter_text, lines_after, open_source
from scriptflow_prefect.history.output_log import OutputLogWriter, format_ts

TS = datetime(2024, 5, 1, 9, 0, 0, 123456, tzinfo=UTC)
ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    return tmp_path / "output.log"


def read_output(path: Path, after: int = 0, limit: int = 1000) -> tuple[list[dict], int, bool]:
    with open_source(path, path.with_suffix(".log.gz"), None) as src:
        return lines_after(src, after, limit)


def output_text(path: Path, lines_per_item: int) -> list[str]:
    with open_source(path, path.with_suffix(".log.gz"), None) as src:
        return list(iter_text(src, lines_per_item))


def write(path: Path, *records: tuple[str, str]) -> None:
    with OutputLogWriter(path) as log:
        for stream, text in records:
            log.write(TS, stream, text)


def test_it_round_trips_text_with_tabs_carriage_returns_and_unicode(log_path: Path) -> None:
    records = [
        ("stdout", "a\tb\t\tc"),
        ("stderr", "progress 1\rprogress 2\r"),
        ("stdout", ""),
        ("stdout", "ção ✓ \ufffd"),
    ]
    write(log_path, *records)

    lines, cursor, more = read_output(log_path)

    assert [(line["stream"], line["text"]) for line in lines] == records
    assert {line["ts"] for line in lines} == {"2024-05-01T09:00:00.123456Z"}
    assert cursor == log_path.stat().st_size
    assert not more


def test_it_writes_one_line_per_record_in_the_documented_format(log_path: Path) -> None:
    write(log_path, ("stdout", "hello"), ("stderr", "oops"))

    assert log_path.read_bytes() == (
        b"2024-05-01T09:00:00.123456Z\tstdout\thello\n2024-05-01T09:00:00.123456Z\tstderr\toops\n"
    )


def test_it_writes_timestamps_in_utc_with_microseconds_and_a_z() -> None:
    paris = timezone(timedelta(hours=2))

    assert format_ts(datetime(2024, 5, 1, 11, 0, tzinfo=paris)) == "2024-05-01T09:00:00.000000Z"
    assert format_ts(datetime(2024, 5, 1, 9, 0)) == "2024-05-01T09:00:00.000000Z"
    assert ISO_Z.match(format_ts(datetime.now(UTC)))


def test_it_splits_text_holding_newlines_into_several_records(log_path: Path) -> None:
    with OutputLogWriter(log_path) as log:
        log.write(TS, "stdout", "one\ntwo")
        log.write_lines(TS, "stderr", ["three", "four\nfive"])

    texts = [line["text"] for line in read_output(log_path)[0]]
    assert texts == ["one", "two", "three", "four", "five"]


def test_it_refuses_a_stream_name_that_would_break_the_format(log_path: Path) -> None:
    with OutputLogWriter(log_path) as log, pytest.raises(ValueError):
        log.write(TS, "std\tout", "x")


def test_it_pages_with_a_byte_cursor(log_path: Path) -> None:
    write(log_path, *[("stdout", f"line {i}") for i in range(25)])

    seen, cursor, pages = [], 0, 0
    while True:
        lines, cursor, more = read_output(log_path, after=cursor, limit=10)
        seen += [line["text"] for line in lines]
        pages += 1
        if not more:
            break

    assert seen == [f"line {i}" for i in range(25)]
    assert pages == 3
    assert cursor == log_path.stat().st_size
    assert read_output(log_path, after=cursor) == ([], cursor, False)


def test_it_never_returns_a_half_written_line(log_path: Path) -> None:
    write(log_path, ("stdout", "whole"))
    with log_path.open("ab") as handle:
        handle.write(b"2024-05-01T09:00:00.123456Z\tstdout\thal")

    lines, cursor, _ = read_output(log_path)
    assert [line["text"] for line in lines] == ["whole"]

    with log_path.open("ab") as handle:
        handle.write(b"f written\n")
    rest, _, _ = read_output(log_path, after=cursor)
    assert [line["text"] for line in rest] == ["half written"]


@pytest.mark.parametrize("cursor", [-1, 5, 10_000])
def test_it_refuses_a_cursor_that_is_not_at_a_line_start(log_path: Path, cursor: int) -> None:
    write(log_path, ("stdout", "hello"), ("stdout", "world"))

    with pytest.raises(ValueError):
        read_output(log_path, after=cursor)


def test_a_reader_sees_a_new_line_within_100_ms_without_flush_or_close(log_path: Path) -> None:
    with OutputLogWriter(log_path) as log:
        log.write(TS, "stdout", "first")
        started = time.monotonic()
        while not read_output(log_path)[0]:
            assert time.monotonic() - started < 0.5, "line not visible"
            time.sleep(0.005)
        seen_after = time.monotonic() - started

    assert seen_after < 0.15  # 50 ms flush interval, plus slack for a busy machine


def test_it_keeps_records_whole_when_threads_write_at_once(log_path: Path) -> None:
    def writer(log: OutputLogWriter, name: str) -> None:
        for i in range(5000):
            log.write(datetime.now(UTC), "stdout", f"{name} {i}\tx")

    with OutputLogWriter(log_path) as log:
        threads = [threading.Thread(target=writer, args=(log, f"t{n}")) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    lines = read_output(log_path, limit=100_000)[0]
    assert len(lines) == 20_000
    for n in range(4):
        mine = [line["text"] for line in lines if line["text"].startswith(f"t{n} ")]
        assert mine == [f"t{n} {i}\tx" for i in range(5000)]
    assert all(ISO_Z.match(line["ts"]) for line in lines)


def test_it_appends_to_an_existing_file(log_path: Path) -> None:
    write(log_path, ("stdout", "before"))
    write(log_path, ("stdout", "after"))

    assert [line["text"] for line in read_output(log_path)[0]] == ["before", "after"]


def test_it_refuses_writes_after_close(log_path: Path) -> None:
    log = OutputLogWriter(log_path)
    log.close()
    log.close()

    with pytest.raises(ValueError):
        log.write(TS, "stdout", "late")


def test_it_gives_the_download_as_plain_lines_without_an_unfinished_one(log_path: Path) -> None:
    write(log_path, ("stdout", "hello\tworld"), ("stderr", ""), ("stdout", "bye"))
    with log_path.open("ab") as handle:
        handle.write(b"2024-05-01T09:00:00.123456Z\tstdout\tunfini")

    text = output_text(log_path, lines_per_item=1)

    assert text == [
        "2024-05-01T09:00:00.123456Z stdout hello\tworld\n",
        "2024-05-01T09:00:00.123456Z stderr \n",
        "2024-05-01T09:00:00.123456Z stdout bye\n",
    ]
    assert "".join(output_text(log_path, lines_per_item=2)) == "".join(text)
    assert len(output_text(log_path, lines_per_item=2)) == 2
