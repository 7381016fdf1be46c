"""The output index and the block-gzip output store, without a stack: phrase search, exact
cursors in compressed output, first error, retention of index rows and files, summaries."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import wait_until

from scriptflow_prefect.history import index as history_index
from scriptflow_prefect.history import output as history_output
from scriptflow_prefect.history import service as history
from scriptflow_prefect.history.output_log import OutputLogWriter
from scriptflow_prefect.platform.settings import Settings

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


@pytest.fixture
def settings(tmp_path) -> Settings:
    s = Settings(home=tmp_path / "home")
    s.ensure_dirs()
    return s


def write_run(settings, lines, *, expected=NOW, script_id=1, index=True) -> str:
    """An output file as the run_script flow writes it; `lines` are (stream, text)."""
    run_id = str(uuid.uuid4())
    with OutputLogWriter(history_index.plain_path(settings, run_id)) as out:
        for stream, text in lines:
            out.write(expected, stream, text)
    if index:
        assert history_index.index_run(settings, run_id, script_id=script_id, expected=expected)
    return run_id


def found(settings, q, **kw) -> list[str]:
    return [h.run_id for h in history_index.search(settings, history_index.Phrase.parse(q), **kw)]


def test_it_finds_exactly_the_runs_whose_output_holds_the_phrase(settings):
    a = write_run(
        settings, [("stdout", "Connecting to db01"), ("stderr", "Connection refused (errno 111)")]
    )
    b = write_run(
        settings,
        [("stdout", "connection REFUSED"), ("stdout", "done")],
        expected=NOW + timedelta(hours=1),
    )
    c = write_run(settings, [("stdout", "connection"), ("stdout", "refused")])  # two lines
    d = write_run(settings, [("stdout", "refused connection")])  # wrong order
    write_run(settings, [("stdout", "nothing to see")])
    assert found(settings, "connection refused") == [b, a]  # newest first
    assert found(settings, "Connection   refused!!") == [b, a]  # punctuation and case ignored
    assert found(settings, "connection refu") == [b, a]  # the last word may be a prefix
    assert set(found(settings, "refused")) == {a, b, c, d}
    assert found(settings, "errno 111") == [a]
    assert found(settings, "see nothing") == []


def test_it_ignores_accents_and_limits_by_script_and_time(settings):
    a = write_run(settings, [("stdout", "Relatório concluído")], script_id=1)
    b = write_run(
        settings, [("stdout", "relatorio concluido")], script_id=2, expected=NOW - timedelta(days=3)
    )
    assert set(found(settings, "relatorio concluido")) == {a, b}
    assert found(settings, "RELATÓRIO", script_ids=[2]) == [b]
    assert found(settings, "relatorio", script_ids=[]) == []
    assert found(settings, "relatorio", since=NOW - timedelta(days=1)) == [a]
    assert found(settings, "relatorio", until=NOW - timedelta(days=1)) == [b]


def test_it_refuses_a_query_without_words():
    with pytest.raises(history_index.QueryError):
        history_index.Phrase.parse(" !!! -- ")


def test_it_shows_the_first_matching_line_of_a_hit(settings):
    lines = [("stdout", f"line {i}") for i in range(5000)] + [("stderr", "KeyError: 'disk'")]
    run_id = write_run(settings, lines)
    phrase = history_index.Phrase.parse("keyerror disk")
    hit = history_index.search(settings, phrase)[0]
    line = history_index.matching_line(settings, hit, phrase)
    assert (line["stream"], line["text"]) == ("stderr", "KeyError: 'disk'")
    with history_index.source(settings, run_id) as src:
        assert history_output.lines_after(src, line["at"], 1)[0][0]["text"] == line["text"]


def test_it_compresses_a_big_output_and_keeps_every_cursor_valid(settings):
    lines = [
        ("stderr" if i % 1000 == 999 else "stdout", f"row {i} " + "x" * (i % 50))
        for i in range(20_000)
    ]
    run_id = write_run(settings, lines)
    plain, gz = history_index.plain_path(settings, run_id), history_index.gz_path(settings, run_id)
    assert not plain.exists() and gz.exists()
    entry = history_index.entry(settings, run_id)
    assert entry.lines == 20_000 and gz.stat().st_size < entry.bytes / 3
    # The .gz is ordinary gzip: every record is there, in order.
    raw = gzip.decompress(gz.read_bytes()).decode().splitlines()
    assert [r.split("\t", 2)[2] for r in raw] == [t for _s, t in lines]
    with history_index.source(settings, run_id) as src:
        assert src.size == entry.bytes  # the plain file is gone: this is the .gz
        texts, cursor = [], 0
        while True:  # page through across block boundaries
            page, cursor, more = history_output.lines_after(src, cursor, 777)
            texts += [ln["text"] for ln in page]
            if not more:
                break
        assert texts == [t for _s, t in lines]
        tail, start = history_output.lines_before(src, src.size, 100)
        assert [ln["text"] for ln in tail] == [t for _s, t in lines[-100:]]
        earlier, _ = history_output.lines_before(src, start, 100)
        assert [ln["text"] for ln in earlier] == [t for _s, t in lines[-200:-100]]
        for bad in (-1, 3, src.size + 1):
            with pytest.raises(history_output.CursorError):
                history_output.lines_after(src, bad, 1)
        assert history_output.first_error(src) == entry.first_error
        first_err = history_output.lines_after(src, entry.first_error, 1)[0][0]
        assert (first_err["stream"], first_err["text"]) == ("stderr", lines[999][1])
        hits, total = history_output.find_lines(src, "ROW 1999 ")
        assert total == 1 and history_output.lines_after(src, hits[0], 1)[0][0]["text"].startswith(
            "row 1999 "
        )
        text = "".join(history_output.iter_text(src, lines_per_item=300))
    assert text.count("\n") == 20_000 and text.endswith(f"stderr {lines[-1][1]}\n")
    # The block table can be rebuilt from the file alone (if the catalog were lost).
    assert history_output.scan_blocks(gz) == history_index.blocks_of(settings, run_id)


def test_a_traceback_on_stdout_is_an_error_line_too(settings):
    run_id = write_run(
        settings,
        [
            ("stdout", "starting"),
            ("stdout", "Traceback (most recent call last):"),
            ("stdout", '  File "x.py", line 1'),
        ],
    )
    entry = history_index.entry(settings, run_id)
    with history_index.source(settings, run_id) as src:
        assert history_output.lines_after(src, entry.first_error, 1)[0][0]["text"].startswith(
            "Traceback"
        )


def test_indexing_twice_is_harmless_and_missed_runs_are_listed(settings):
    run_id = write_run(settings, [("stdout", "hello")])
    assert not history_index.index_run(settings, run_id, script_id=1, expected=NOW)
    missed = write_run(settings, [("stdout", "late")], index=False)
    old = time.time() - 60
    os.utime(history_index.plain_path(settings, missed), (old, old))
    assert history_index.unindexed_runs(settings, older_than=5) == [missed]
    history_index.index_run(settings, missed, script_id=1, expected=NOW)
    assert history_index.unindexed_runs(settings, older_than=5) == []
    assert found(settings, "late") == [missed]


def test_forgetting_removes_old_runs_and_keeps_the_rest(settings):
    old = write_run(settings, [("stdout", "ancient words")], expected=NOW - timedelta(days=40))
    edge = write_run(settings, [("stdout", "ancient edge")], expected=NOW - timedelta(days=29))
    new = write_run(settings, [("stdout", "ancient but kept")], expected=NOW)
    stray = settings.outputs_dir / f"{uuid.uuid4()}.log"  # never indexed, 40 days old
    stray.write_text("x\n")
    long_ago = (NOW - timedelta(days=40)).timestamp()
    os.utime(stray, (long_ago, long_ago))
    for run_id in (old, edge, new):  # files written now: retention goes by the run's time
        assert history_index.has_output(settings, run_id)
    freed = history_index.forget_before(settings, NOW - timedelta(days=30))
    assert freed["runs"] == 1 and freed["bytes"] > 0
    assert not history_index.has_output(settings, old) and not stray.exists()
    assert history_index.has_output(settings, edge) and history_index.has_output(settings, new)
    assert set(found(settings, "ancient")) == {edge, new}
    day_files = {p.name for p in history_index.history_dir(settings).glob("fts-*.db")}
    assert (
        history_index.day_path(settings, history_index.day_of(NOW - timedelta(days=40))).name
        not in day_files
    )


def test_it_summarises_rates_durations_and_days():
    rows = []
    for day, state, seconds in [
        (0, "COMPLETED", 10),
        (0, "FAILED", 30),
        (1, "COMPLETED", 20),
        (3, "CRASHED", 0),
        (10, "COMPLETED", 40),
        (12, "CANCELLED", 5),
        (40, "COMPLETED", 1),
    ]:
        at = NOW - timedelta(days=day, hours=1)
        rows.append(
            {
                "id": str(uuid.uuid4()),
                "state_type": state,
                "timestamp": at.isoformat().replace("+00:00", "Z"),
                "duration": f"PT{seconds}S",
            }
        )
    s = history.summarize(rows, now=NOW, zone="UTC")
    assert (s["finished_7"], s["rate_7"]) == (4, 0.5)  # cancelled runs are no verdict
    assert (s["finished_30"], s["rate_30"]) == (5, 0.6)
    assert s["avg_duration"] == pytest.approx((10 + 30 + 20 + 40) / 4)
    assert s["p95_duration"] == 40
    strip = {d["day"]: d["outcome"] for d in s["strip"]}
    assert len(s["strip"]) == 30
    assert strip[NOW.date()] == "failed"
    assert strip[(NOW - timedelta(days=1)).date()] == "succeeded"
    assert strip[(NOW - timedelta(days=2)).date()] == "none"
    assert strip[(NOW - timedelta(days=12)).date()] == "none"  # only a cancelled run


def test_percentile_is_nearest_rank():
    assert history.percentile([], 95) is None
    assert history.percentile(list(range(1, 21)), 95) == 19
    assert history.percentile([5.0], 95) == 5.0


def test_the_gzip_blocks_hold_whole_lines(tmp_path: Path):
    path = tmp_path / "out.log"
    long_line = "y" * (history_output.BLOCK_BYTES * 2)
    with OutputLogWriter(path) as out:
        out.write(NOW, "stdout", "short")
        out.write(NOW, "stdout", long_line)
        out.write(NOW, "stderr", "after")
    blocks = list(history_output.iter_blocks(path))
    assert b"".join(b for _o, _l, b in blocks) == path.read_bytes()
    assert all(b.endswith(b"\n") for _o, _l, b in blocks)
    assert [line for _o, line, _b in blocks] == [0, 1, 2][: len(blocks)]


INDEX_ONE = """
import json, sys, time
from datetime import datetime
from pathlib import Path
from scriptflow_prefect.history import index as history_index
from scriptflow_prefect.platform.settings import Settings
home, run_id, expected, ready, go = sys.argv[1:]
settings = Settings(home=home)
Path(ready).touch()
while not Path(go).exists():
    time.sleep(0.001)
done = history_index.index_run(
    settings, run_id, script_id=1, expected=datetime.fromisoformat(expected)
)
print(json.dumps(done))
"""


@pytest.mark.parametrize("how", ["threads", "processes"])
def test_two_indexings_of_one_run_at_once_leave_it_indexed_once(settings, tmp_path, how):
    """A search's catch-up finds a big output the background indexer is still compressing
    (or two processes share a home): one of them indexes it, the other stands aside."""
    lines = [("stdout", f"row {i} " + "y" * 60) for i in range(60_000)]
    lines.append(("stderr", "the very last words"))
    run_id = write_run(settings, lines, index=False)
    if how == "threads":
        barrier = threading.Barrier(2)
        results: list[object] = []

        def index() -> None:
            barrier.wait()
            try:
                results.append(history_index.index_run(settings, run_id, script_id=1, expected=NOW))
            except Exception as exc:  # noqa: BLE001 - reported by the assertion below
                results.append(exc)

        threads = [threading.Thread(target=index) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    else:
        go, ready = tmp_path / "go", [tmp_path / "ready-1", tmp_path / "ready-2"]
        args = [str(settings.home), run_id, NOW.isoformat()]
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", INDEX_ONE, *args, str(r), str(go)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for r in ready
        ]
        wait_until(lambda: all(r.exists() for r in ready), 60, "both processes being ready")
        go.touch()
        outs = [p.communicate(timeout=120) for p in procs]
        assert [p.returncode for p in procs] == [0, 0], [err for _out, err in outs]
        results = [json.loads(out) for out, _err in outs]
    assert sorted(results, key=repr) == [False, True], results
    entry = history_index.entry(settings, run_id)
    assert entry is not None and entry.lines == len(lines)
    assert found(settings, "the very last words") == [run_id]
    with history_index.source(settings, run_id) as src:
        tail, _start = history_output.lines_before(src, src.size, 1)
    assert [ln["text"] for ln in tail] == ["the very last words"]
    left = sorted(p.name for p in settings.outputs_dir.iterdir())
    assert left == [f"{run_id}.log.gz"], left  # compressed, no temporary or lock file
