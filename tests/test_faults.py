"""Issue 13 "Disk full and friends", with real parts: a real tmpfs that a real script fills,
the stack's real databases checked with PRAGMA integrity_check afterwards, a real second
SQLite connection (and the sqlite3 tool) holding the overlay database as a backup does.

Mounting a tmpfs needs root (CI runs as root); elsewhere those tests skip."""

from __future__ import annotations

import contextlib
import errno
import gzip
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psutil
import pytest
from conftest import (
    ADMIN_PASSWORD,
    IN_CI,
    need_tool,
    output_of,
    private_home_base,
    start_stack,
    stop_stack,
    upload,
    wait_run,
    wait_until,
)
from delay_proxy import stack_behind_proxy

from scriptflow_prefect.history.output import lines_after, open_source
from scriptflow_prefect.history.output_log import OutputLogWriter
from scriptflow_prefect.platform.disk_space import DiskFull, free_bytes, reserve_for

MIB = 1 << 20
# Says its pid, then prints 1 kB lines for ever: only a full disk ends it.
FLOOD = """\
import os, sys
print("pid", os.getpid(), flush=True)
line = "x" * 1000
while True:
    print(line)
"""


def need_mount() -> None:
    if os.geteuid() != 0:
        if IN_CI:
            pytest.fail("the disk-full tests mount a tmpfs, which needs root (CI runs as root)")
        pytest.skip("mounting a tmpfs needs root")


@contextlib.contextmanager
def tmpfs(path: Path, size_mb: int) -> Iterator[Path]:
    need_mount()
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=755", "tmpfs", str(path)],
        check=True,
    )
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)
        with contextlib.suppress(OSError):
            path.rmdir()


def grow(path: Path, size_mb: int) -> None:
    """Space returns: the tmpfs gets bigger, nothing on it is removed."""
    subprocess.run(["mount", "-o", f"remount,size={size_mb}m", str(path)], check=True)


def fill(folder: Path) -> Path:
    """A ballast file that takes every free byte of the disk."""
    ballast = folder / "ballast"
    chunk = b"\0" * MIB
    with open(ballast, "wb", buffering=0) as f:
        while True:
            try:
                f.write(chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                chunk = chunk[: len(chunk) // 2]
                if not chunk:
                    return ballast


def integrity(path: Path) -> str:
    con = sqlite3.connect(path)
    try:
        return con.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        con.close()


# -- the output file on a full disk (no stack) --------------------------------------------------


def test_the_output_file_stops_at_a_whole_record_when_the_disk_fills(tmp_path):
    with tmpfs(tmp_path / "disk", 12) as disk:
        path = disk / "run.log"
        ts = datetime.now(UTC)
        written = 0
        with OutputLogWriter(path) as log, pytest.raises(DiskFull) as raised:
            for n in range(100_000):
                log.write_lines(ts, "stdout", [f"{n} " + "y" * 997] * 10)
                written = n

        assert raised.value.folder == disk
        assert log.failure is raised.value
        free, total = free_bytes(disk)
        assert free >= reserve_for(total) - 64 * 1024  # stopped at the reserve, not at zero
        data = path.read_bytes()
        assert data.endswith(b"\n")
        with open_source(path, disk / "run.log.gz", None) as src:
            lines, _cursor, more = lines_after(src, 0, 1_000_000)
        assert not more
        assert len(lines) == data.count(b"\n") > 1000
        assert all(line["stream"] == "stdout" and len(line["text"]) > 997 for line in lines)
        assert int(lines[-1]["text"].split()[0]) <= written


def test_a_write_after_the_failure_raises_it_again_and_close_does_not(tmp_path):
    with tmpfs(tmp_path / "disk", 8) as disk:
        ballast = fill(disk)
        log = OutputLogWriter(disk / "run.log")
        log.write(datetime.now(UTC), "stdout", "one line")
        with pytest.raises(DiskFull):
            log.flush()
        with pytest.raises(DiskFull):
            log.write(datetime.now(UTC), "stdout", "another")
        log.close()  # the caller reads log.failure; closing never raises it
        ballast.unlink()
        assert (disk / "run.log").read_bytes() == b""


# -- a run that fills the disk of a whole stack ----------------------------------------------


@pytest.fixture(scope="module")
def tiny_stack():
    """A stack whose whole home (databases, Prefect's too, store, output) is a 48 MB tmpfs."""
    mount = private_home_base() / f"faults-{os.getpid()}"
    with tmpfs(mount, 48) as disk:
        s = start_stack(disk / "home")
        try:
            r = s.cli("token", "create", "admin")
            assert r.returncode == 0, r.stderr
            s.tokens["admin"] = r.stdout.strip()
            yield s, disk
        finally:
            stop_stack(s)


@contextlib.contextmanager
def signed_in(url: str) -> Iterator[httpx.Client]:
    """A browser's session: admin signed in on the pages."""
    with httpx.Client(base_url=url, timeout=30) as browser:
        page = browser.get("/login")
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
        form = {"username": "admin", "password": ADMIN_PASSWORD, "csrf_token": csrf, "next": "/"}
        r = browser.post("/login", data=form)
        assert r.status_code == 303, r.text
        yield browser


def is_gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_a_run_that_fills_the_disk_fails_disk_full_and_nothing_is_corrupt_after(tiny_stack):
    stack, disk = tiny_stack
    home = stack.home
    with stack.client("admin") as admin, signed_in(stack.url) as browser:
        later = upload(admin, "print('after the disk was full')\n")
        flood = upload(admin, FLOOD)
        run = admin.post(f"/scripts/{flood['id']}/runs").json()

        done = wait_run(admin, run["id"], timeout=240)

        assert done["status"] == "failed", done
        assert done["message_code"] == "disk_full", done
        assert "The disk is full: the output could not be kept" in done["message"]
        lines = output_of(admin, run["id"])
        pid = int(lines[0]["text"].split()[1])
        assert wait_until(lambda: is_gone(pid), 15, "the flooding script stopping")
        assert len(lines) > 1000 and all(ln["text"] == "x" * 1000 for ln in lines[1:])
        # Readable up to where it stopped, whole records only (plain, or compressed by now).
        plain = home / "outputs" / f"{run['id']}.log"
        stored = (
            plain.read_bytes()
            if plain.exists()
            else gzip.decompress(plain.with_suffix(".log.gz").read_bytes())
        )
        assert stored.endswith(b"\n") and stored.count(b"\n") == len(lines)
        # The stack keeps serving while the disk is (nearly) full: API, pages, the run page.
        assert admin.get("/runs", params={"script_id": flood["id"]}).status_code == 200
        assert browser.get("/").status_code == 200
        page = browser.get(f"/runs/{run['id']}")
        assert page.status_code == 200
        assert "The disk is full: the output could not be kept" in page.text

        # Completely full now: edits and uploads are refused with a reason, nothing written.
        ballast = fill(disk)
        r = admin.patch(f"/scripts/{later['id']}", json={"description": "changed " * 500})
        assert r.status_code == 507, r.text
        assert "disk is full" in r.json()["detail"]
        r = admin.post("/scripts", files={"file": ("new.py", b"print(1)\n" * 1000)})
        assert r.status_code == 507, r.text
        assert admin.get(f"/scripts/{later['id']}").json()["description"] == ""
        assert browser.get(f"/runs/{run['id']}").status_code == 200

        # Space returns: every database is intact, and a later run succeeds and is found.
        ballast.unlink()
        grow(disk, 96)
        databases = [home / "scriptflow.db", home / "prefect" / "prefect.db"]
        databases += sorted((home / "history").glob("*.db"))
        for db in databases:
            assert integrity(db) == "ok", db
        after = admin.post(f"/scripts/{later['id']}/runs").json()
        assert wait_run(admin, after["id"])["status"] == "succeeded"
        assert [ln["text"] for ln in output_of(admin, after["id"])] == ["after the disk was full"]
        found = admin.get("/runs", params={"q": '"after the disk was full"'}).json()
        assert [r["id"] for r in found["items"]] == [after["id"]]
        r = admin.patch(f"/scripts/{later['id']}", json={"description": "changed"})
        assert r.status_code == 200, r.text
        for db in databases:
            assert integrity(db) == "ok", db


# -- the overlay database held by a backup ---------------------------------------------------


class Holder:
    """A second connection that holds the overlay database's write lock, as a long backup
    or an operator's `BEGIN EXCLUSIVE` does."""

    def __init__(self, path: Path, seconds: float):
        self._path, self._seconds = path, seconds
        self.locked, self.release = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._hold, daemon=True)

    def _hold(self) -> None:
        con = sqlite3.connect(self._path, isolation_level=None)
        try:
            con.execute("BEGIN EXCLUSIVE")
            self.locked.set()
            self.release.wait(self._seconds)
            con.execute("ROLLBACK")
        finally:
            con.close()

    def __enter__(self) -> Holder:
        self._thread.start()
        assert self.locked.wait(10)
        return self

    def __exit__(self, *_exc) -> None:
        self.release.set()
        self._thread.join()


def test_writes_answer_503_with_retry_after_while_a_backup_holds_the_database(stack, admin):
    script = upload(admin, "print('hi')\n")
    url = f"/scripts/{script['id']}"
    with signed_in(stack.url) as browser, Holder(stack.home / "scriptflow.db", 30):
        # Reads answer (WAL), also while writes wait: they do not queue behind them.
        reads_while_waiting = 0
        with ThreadPoolExecutor(2) as pool:
            patch = pool.submit(admin.patch, url, json={"description": "changed"})
            upload_ = pool.submit(admin.post, "/scripts", files={"file": ("new.py", b"print(1)\n")})
            while not (patch.done() and upload_.done()):
                assert admin.get(url).status_code == 200
                assert browser.get("/").status_code == 200
                assert browser.get(f"/scripts/{script['id']}").status_code == 200
                reads_while_waiting += not (patch.done() or upload_.done())
            assert reads_while_waiting >= 1
            for answer in (patch.result(), upload_.result()):
                assert answer.status_code == 503, answer.text
                assert answer.headers["retry-after"].isdigit()
                assert "database is busy" in answer.json()["detail"]
        # Run now writes nothing to the overlay database: it is not held up.
        run = admin.post(f"/scripts/{script['id']}/runs")
        assert run.status_code == 202, run.text
        form = browser.get(f"/scripts/{script['id']}/edit").text
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', form).group(1)
        page = browser.post(
            f"/scripts/{script['id']}/edit",
            data={"csrf_token": csrf, "name": script["name"], "description": "x"},
        )
        assert page.status_code == 503, page.text
        assert "database is busy" in page.text and page.headers["retry-after"].isdigit()

    assert admin.get(url).json()["description"] == ""  # nothing half-written
    assert wait_run(admin, run.json()["id"])["status"] == "succeeded"
    r = admin.patch(url, json={"description": "changed"})
    assert r.status_code == 200, r.text
    assert admin.get(url).json()["description"] == "changed"


def test_an_online_backup_with_the_sqlite3_tool_does_not_stop_writes(stack, admin, tmp_path):
    sqlite3_tool = need_tool("sqlite3", "the backup an operator runs")
    script = upload(admin, "print('hi')\n")
    url = f"/scripts/{script['id']}"
    stop = threading.Event()
    copies: list[Path] = []

    def backups() -> None:
        while not stop.is_set():
            copy = tmp_path / f"copy-{len(copies)}.db"
            # `.timeout`: without it the tool gives up at once when a write is under way.
            subprocess.run(
                [sqlite3_tool, "-cmd", ".timeout 5000", str(stack.home / "scriptflow.db")]
                + [f".backup '{copy}'"],
                check=True,
                timeout=60,
            )
            copies.append(copy)

    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(backups)
        answers = [admin.patch(url, json={"description": f"v{n}"}) for n in range(20)]
        stop.set()
        running.result()

    assert {a.status_code for a in answers} <= {200, 503}, [a.text for a in answers]
    assert copies and all(integrity(c) == "ok" for c in copies)


# -- a slow Prefect API --------------------------------------------------------------------


@pytest.fixture
def slow_home() -> Iterator[Path]:
    home = private_home_base() / f"slow-{os.getpid()}"
    yield home
    shutil.rmtree(home, ignore_errors=True)


@pytest.mark.stack
@pytest.mark.timeout(1800)  # every Prefect call of a run takes 5 s more: a run takes minutes
def test_pages_answer_with_a_note_and_runs_finish_when_prefect_takes_5_s_a_call(slow_home):
    with stack_behind_proxy(slow_home) as (stack, proxy):
        with stack.client("admin") as admin, signed_in(stack.url) as browser:
            script = upload(admin, "print('slow but done')\n")
            first = admin.post(f"/scripts/{script['id']}/runs").json()
            assert wait_run(admin, first["id"])["status"] == "succeeded"
            assert "prefect-slow" not in browser.get("/").text

            proxy.delay = 5.0
            browser.timeout = httpx.Timeout(120)  # a guard against a hang, not a measure
            for path in ("/", "/scripts", f"/scripts/{script['id']}"):
                page = browser.get(path)
                assert page.status_code == 200, (path, page.text[:500])
                assert 'id="prefect-slow"' in page.text, path
            run_page = browser.get(f"/runs/{first['id']}")
            assert run_page.status_code in (200, 503), run_page.text[:500]
            if run_page.status_code == 503:
                assert "Prefect is slow to answer" in run_page.text
                assert run_page.headers["retry-after"].isdigit()

            admin.timeout = httpx.Timeout(300)  # the API waits for Prefect: no budget
            second = admin.post(f"/scripts/{script['id']}/runs").json()
            done = wait_run(admin, second["id"], timeout=900)
            assert done["status"] == "succeeded", done
            assert [ln["text"] for ln in output_of(admin, second["id"])] == ["slow but done"]


def test_a_log_file_on_a_full_disk_is_reported_once_and_written_again_later(tmp_path):
    script = f"""
import logging, sys
from pathlib import Path
from scriptflow_prefect.commands.logfiles import setup_logging
from scriptflow_prefect.platform.settings import load_settings

setup_logging(load_settings(home=Path({str(tmp_path / "disk" / "home")!r})), "web")
log = logging.getLogger("scriptflow.test")
for n in range(200):
    log.warning("while full %d %s", n, "z" * 4000)
Path({str(tmp_path / "disk" / "ballast")!r}).unlink()
log.warning("after space returned")
for h in logging.getLogger("scriptflow").handlers:
    h.flush()
"""
    with tmpfs(tmp_path / "disk", 4) as disk:
        (disk / "home").mkdir()
        fill(disk)
        done = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        assert done.stderr.count("cannot write the log file") == 1, done.stderr
        assert "Traceback" not in done.stderr
        assert "after space returned" in (disk / "home" / "logs" / "web.log").read_text()
