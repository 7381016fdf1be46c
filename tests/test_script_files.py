"""A script version's files without a stack: upload rules (names, zips, limits, which file is
the script), the folder a run starts in, what a run changed, and reading and writing files
in folders that scripts write to without following their links out."""

from __future__ import annotations

import io
import os
import stat
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from scriptflow_prefect.execution import nofollow, workspace
from scriptflow_prefect.execution.workdir import fresh_workdir
from scriptflow_prefect.history import retention, run_files
from scriptflow_prefect.platform.errors import ServiceError
from scriptflow_prefect.scripts import files

RUN_ID = "0b7f3c1e-1111-4222-8333-944455556666"


def a_zip(entries: dict[str, bytes], *, links: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in entries.items():
            z.writestr(name, data)
        for name, target in (links or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            z.writestr(info, target)
    return buf.getvalue()


def refused(parts, entry=None) -> ServiceError:
    with pytest.raises(ServiceError) as caught:
        files.bundle_of(parts, entry)
    assert str(caught.value)
    return caught.value


# -- upload rules ------------------------------------------------------------------------------
def test_it_takes_one_file_as_the_script_and_keeps_only_the_last_part_of_its_name():
    bundle = files.bundle_of([("C:\\Users\\ana\\job.py", b"print(1)\n")])
    assert bundle.entry == files.ScriptFile("job.py", b"print(1)\n") and bundle.companions == ()


def test_it_finds_the_script_among_several_files():
    bundle = files.bundle_of([("settings.ini", b"[a]\n"), ("job.bat", b"@echo hi\r\n")])
    assert bundle.entry.name == "job.bat"
    assert [f.name for f in bundle.companions] == ["settings.ini"]


def test_it_keeps_a_zips_sub_folders_and_drops_one_top_folder_around_everything():
    data = a_zip({"report/job.py": b"x", "report/conf/settings.ini": b"y", "report/sql/": b""})
    bundle = files.bundle_of([("report.zip", data)])
    assert bundle.entry.name == "job.py"
    assert [f.name for f in bundle.companions] == ["conf/settings.ini"]
    # helper modules in a sub-folder are not candidates for the script
    bundle = files.bundle_of([("x.zip", a_zip({"main.py": b"x", "lib/util.py": b"y"}))])
    assert bundle.entry.name == "main.py"


def test_it_takes_the_named_entry_point_when_several_could_be():
    parts = [("a.py", b"x"), ("b.py", b"y")]
    assert "entry" in str(refused(parts))
    assert files.bundle_of(parts, "B.py").entry.name == "b.py"
    assert refused(parts, "c.py").status == 422
    assert refused([("a.py", b"x"), ("n.ini", b"y")], "n.ini").status == 422


@pytest.mark.parametrize(
    "name",
    [
        "../evil.py",
        "conf/../../evil.ini",
        "/etc/cron.d/evil",
        "C:\\Windows\\evil.ini",
        "..\\..\\evil.ini",
        "CON.ini",
        "sub/nul.txt",
        "com1",
        "bad|name.txt",
        "trailing.",
    ],
)
def test_it_refuses_a_zip_name_that_could_leave_the_folder_or_break_on_windows(name):
    data = a_zip({"job.py": b"print(1)\n", name: b"x"})
    assert refused([("job.zip", data)]).status == 422


@pytest.mark.parametrize(
    "names", [("Settings.ini", "settings.INI"), ("conf", "conf/a.ini"), ("A/x", "a/y/z")]
)
def test_it_refuses_names_that_would_be_one_file_on_windows(names):
    data = a_zip({"job.py": b"x", **dict.fromkeys(names, b"y")})
    if names == ("A/x", "a/y/z"):  # folders that differ in case only are one folder: fine
        files.bundle_of([("j.zip", data)])
        return
    assert refused([("j.zip", data)]).status == 422


def test_it_refuses_links_bad_zips_and_mixtures():
    assert refused([("j.zip", a_zip({"job.py": b"x"}, links={"etc": "/etc"}))]).status == 422
    assert refused([("j.zip", b"PK\x03\x04 not really")]).status == 400
    assert refused([("j.zip", a_zip({"job.py": b"x"})), ("a.ini", b"y")]).status == 422
    assert refused([("j.zip", a_zip({"a.ini": b"x", "b.txt": b"y"}))]).status == 400
    assert refused([("j.zip", a_zip({}))]).status == 400
    assert refused([]).status == 400


def test_it_refuses_more_than_10_mb_unpacked_without_unpacking_it_all():
    # 11 MB of zeros compress to ~11 kB: the stated and the real sizes are both checked.
    data = a_zip({"job.py": b"x", "big.bin": b"\0" * (11 * 1024 * 1024)})
    assert len(data) < 100_000
    assert refused([("bomb.zip", data)]).status == 413
    exact = a_zip({"job.py": b"x", "big.bin": b"\0" * (10 * 1024 * 1024 - 1)})
    assert files.bundle_of([("ok.zip", exact)]).companions[0].name == "big.bin"


def test_it_refuses_more_than_100_files():
    many = {f"f{i}.txt": b"" for i in range(100)}
    assert refused([("m.zip", a_zip({"job.py": b"x", **many}))]).status == 422
    files.bundle_of([("m.zip", a_zip({"job.py": b"x", **dict(list(many.items())[:99])}))])


def test_a_version_saved_before_files_existed_is_its_entry_point():
    assert files.version_files(None, "job.py", "ab" * 32, 5) == [
        {"name": "job.py", "size": 5, "sha256": "ab" * 32}
    ]


# -- folders scripts write to ------------------------------------------------------------------
@pytest.fixture
def outside(tmp_path: Path) -> Path:
    d = tmp_path / "outside"
    d.mkdir()
    (d / "secret.txt").write_text("not yours")
    return d


@pytest.mark.skipif(not hasattr(os, "symlink") or os.name == "nt", reason="POSIX links")
def test_it_never_follows_a_link_a_script_left_in_its_folder(tmp_path: Path, outside: Path):
    folder = tmp_path / "ws"
    folder.mkdir()
    (folder / "conf").symlink_to(outside)
    (folder / "secret.txt").symlink_to(outside / "secret.txt")
    with pytest.raises(FileNotFoundError):
        nofollow.open_file(folder, "conf/secret.txt")
    with pytest.raises(FileNotFoundError):
        nofollow.open_file(folder, "secret.txt")
    with pytest.raises(FileNotFoundError):
        nofollow.list_dir(folder, "conf")
    for name in ("../outside/secret.txt", "a\x00b", "conf/../../outside/secret.txt"):
        with pytest.raises(FileNotFoundError):
            nofollow.open_file(folder, name)
    assert nofollow.list_dir(folder) == []  # links are not listed
    assert nofollow.scan(folder, 100) == ([], True)
    # Writing the next version's conf/settings.ini replaces the link by a folder.
    nofollow.write_file(folder, "conf/settings.ini", b"[db]\n")
    nofollow.write_file(folder, "secret.txt", b"mine")
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]
    assert (outside / "secret.txt").read_text() == "not yours"
    assert (folder / "conf" / "settings.ini").read_bytes() == b"[db]\n"
    assert not (folder / "conf").is_symlink()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="POSIX FIFOs")
def test_a_fifo_is_neither_listed_nor_opened(tmp_path: Path):
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(FileNotFoundError):
        nofollow.open_file(tmp_path, "pipe")
    assert nofollow.scan(tmp_path, 10) == ([], True)


def test_writing_the_same_bytes_again_leaves_the_file_alone(tmp_path: Path):
    assert nofollow.write_file(tmp_path, "a/b.txt", b"one") is True
    before = (tmp_path / "a" / "b.txt").stat().st_mtime_ns
    assert nofollow.write_file(tmp_path, "a/b.txt", b"one") is False
    assert (tmp_path / "a" / "b.txt").stat().st_mtime_ns == before
    assert nofollow.write_file(tmp_path, "a/b.txt", b"two") is True
    assert sorted(os.listdir(tmp_path / "a")) == ["b.txt"]  # no temporary file left


def test_each_working_folder_mode_puts_the_script_and_the_start_where_it_says(tmp_path: Path):
    home = tmp_path / "home"
    kw = {"workspaces": home / "workspaces", "home": home}

    def run_root(name: str) -> Path:
        return fresh_workdir(home / "work", name)

    kept = workspace.prepare("script", None, run_root=run_root("r1"), script_id=3, **kw)
    assert kept.script_dir == kept.cwd == home / "workspaces" / "3"
    assert kept.beyond(home / "work" / "r1") == (home / "workspaces" / "3",)
    target = tmp_path / "reports" / "daily"
    start_in = workspace.prepare("path", str(target), run_root=run_root("r2"), script_id=3, **kw)
    assert start_in.cwd == target and target.is_dir() and start_in.created
    assert start_in.script_dir == home / "workspaces" / "3"
    fresh = workspace.prepare("fresh", None, run_root=run_root("r3"), script_id=3, **kw)
    assert fresh.cwd != fresh.script_dir and not any(fresh.cwd.iterdir())
    assert fresh.cwd.parent == home / "work" / "r3" and fresh.beyond(home / "work" / "r3") == ()
    for i, inside in enumerate((home, home / "outputs", tmp_path, "D:\\backups")):
        with pytest.raises(workspace.WorkingFolderError):
            workspace.prepare("path", str(inside), run_root=run_root(f"x{i}"), script_id=3, **kw)


def test_it_finds_what_a_run_created_or_changed(tmp_path: Path):
    (tmp_path / "same.txt").write_text("a")
    (tmp_path / "grows.log").write_text("a")
    before = workspace.snapshot(tmp_path)
    (tmp_path / "grows.log").write_text("ab")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "new.csv").write_text("x,y")
    changed, complete = workspace.changed_since(before, tmp_path)
    assert sorted(e.name for e in changed) == ["grows.log", "sub/new.csv"] and complete


# -- a run's kept files --------------------------------------------------------------------------
def test_it_keeps_a_runs_files_within_bounds_and_retention_removes_them(tmp_path, monkeypatch):
    settings = SimpleNamespace(outputs_dir=tmp_path / "outputs", workspaces_dir=tmp_path / "ws")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    before = workspace.snapshot(cwd)
    (cwd / "report.csv").write_bytes(b"a,b\n1,2\n")
    (cwd / "huge.bin").write_bytes(b"x" * 300)
    (cwd / "logs").mkdir()
    (cwd / "logs" / "one.log").write_bytes(b"y" * 150)
    (cwd / "logs" / "two.log").write_bytes(b"z" * 150)
    monkeypatch.setattr(run_files, "MAX_FILE_BYTES", 200)
    monkeypatch.setattr(run_files, "MAX_RUN_BYTES", 200)
    changed, complete = workspace.changed_since(before, cwd)
    assert run_files.keep(settings, RUN_ID, cwd, changed, complete) == 4
    listed, complete = run_files.listed(settings, RUN_ID)
    by_name = {f["name"]: f for f in listed}
    assert by_name["huge.bin"] == {
        "name": "huge.bin",
        "size": 300,
        "stored": False,
        "reason": "too_big",
    }
    assert by_name["report.csv"]["stored"] and by_name["logs/one.log"]["stored"]
    assert by_name["logs/two.log"]["reason"] == "over_total" and complete
    with run_files.open_kept(settings, RUN_ID, "report.csv") as f:
        assert f.read() == b"a,b\n1,2\n"
    for name in ("huge.bin", "nope.txt", "../cwd/report.csv"):
        with pytest.raises(FileNotFoundError):
            run_files.open_kept(settings, RUN_ID, name)
    assert run_files.listed(settings, "../../etc") == ([], True)

    freed = {"files": 0}
    assert retention._remove_outputs(settings, RUN_ID, freed) > 0
    assert run_files.listed(settings, RUN_ID) == ([], True)
    assert not run_files.files_dir(settings, RUN_ID).exists()


def test_a_deleted_scripts_folder_goes_when_retention_says(tmp_path):
    settings = SimpleNamespace(workspaces_dir=tmp_path / "ws")
    (tmp_path / "ws" / "4" / "logs").mkdir(parents=True)
    (tmp_path / "ws" / "5").mkdir()
    assert retention.forget_workspaces(settings, [4, 9]) == 1
    assert sorted(os.listdir(tmp_path / "ws")) == ["5"]
