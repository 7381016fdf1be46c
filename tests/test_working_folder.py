"""Working folders and companion files on a real stack: a folder that stays between runs,
files beside the script (`__file__`, `%~dp0` under real wine), "Start in", a fresh folder per
run, zip uploads, the files a run made (listed, downloaded), the script's folder browsed."""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from pathlib import Path

import pytest
from conftest import need_tool, output_of, unique, upload, wait_run

COUNTER = """\
from pathlib import Path
log = Path("runs.log")
lines = log.read_text().splitlines() if log.exists() else []
log.write_text("\\n".join([*lines, f"run {len(lines) + 1}"]) + "\\n")
print("first line:", log.read_text().splitlines()[0], "| runs:", len(lines) + 1)
"""
READS_INI = """\
import configparser, os
from pathlib import Path
config = configparser.ConfigParser()
config.read(Path(__file__).with_name("settings.ini"))
print(Path(__file__).name, config["db"]["host"], os.getcwd())
"""
INI = b"[db]\nhost = db.example.test\n"


def a_zip(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in entries.items():
            z.writestr(name, data)
    return buf.getvalue()


def upload_files(client, parts: list[tuple[str, bytes]], **data) -> dict:
    r = client.post(
        "/scripts",
        files=[("file", part) for part in parts],
        data={"name": unique("files"), **data},
    )
    assert r.status_code == 201, r.text
    return r.json()


def run_once(client, script: dict) -> tuple[dict, list[str]]:
    r = client.post(f"/scripts/{script['id']}/runs")
    assert r.status_code == 202, r.text
    done = wait_run(client, r.json()["id"], timeout=120)
    return done, [line["text"] for line in output_of(client, done["id"])]


def set_folder(client, script: dict, mode: str, path: str | None = None):
    return client.patch(
        f"/scripts/{script['id']}", json={"working_folder": {"mode": mode, "path": path}}
    )


def test_a_relative_log_file_stays_between_runs_and_each_run_lists_it(stack, alice):
    script = upload(alice, COUNTER, filename="counter.py")
    assert script["working_folder"] == {"mode": "script", "path": None}
    first, out1 = run_once(alice, script)
    second, out2 = run_once(alice, script)
    assert first["status"] == second["status"] == "succeeded", (first, out1)
    assert out1 == ["first line: run 1 | runs: 1"]
    assert out2 == ["first line: run 1 | runs: 2"]
    assert second["files"] == [{"name": "runs.log", "size": 12, "stored": True, "reason": None}]
    r = alice.get(f"/runs/{second['id']}/files/runs.log")
    assert r.status_code == 200 and r.content == b"run 1\nrun 2\n"
    assert r.headers["content-type"] == "application/octet-stream"
    assert r.headers["content-disposition"].startswith('attachment; filename="runs.log"')
    # The run kept its copy: a later run changes the folder, not what this run made.
    run_once(alice, script)
    assert alice.get(f"/runs/{second['id']}/files/runs.log").content == b"run 1\nrun 2\n"
    folder = stack.home / "workspaces" / str(script["id"])
    assert sorted(os.listdir(folder)) == ["counter.py", "runs.log"]


def test_a_python_script_finds_its_companion_ini_through_file(stack, alice):
    script = upload_files(alice, [("report.py", READS_INI.encode()), ("settings.ini", INI)])
    assert script["filename"] == "report.py"
    assert [(f["name"], f["size"]) for f in script["files"]] == [
        ("report.py", len(READS_INI)),
        ("settings.ini", len(INI)),
    ]
    assert script["files"][1]["sha256"] == hashlib.sha256(INI).hexdigest()
    done, out = run_once(alice, script)
    folder = stack.home / "workspaces" / str(script["id"])
    assert done["status"] == "succeeded", out
    assert out == [f"report.py db.example.test {folder}"]
    assert done["files"] == []  # its own files are not "made by the run"
    r = alice.get(f"/scripts/{script['id']}/files/settings.ini")
    assert r.status_code == 200 and r.content == INI


@pytest.mark.wine
def test_a_bat_script_finds_its_companion_through_dp0_under_wine(alice):
    need_tool("wine", ".bat scripts run through wine on Linux")
    bat = (
        b'@echo off\r\necho name=%~nx0\r\ntype "%~dp0settings.ini"\r\necho made>made-by-bat.txt\r\n'
    )
    script = upload_files(alice, [("nightly.bat", bat), ("settings.ini", b"host=db1\r\n")])
    done, out = run_once(alice, script)
    assert done["status"] == "succeeded", (done, out)
    assert out[:2] == ["name=nightly.bat", "host=db1"]
    assert [f["name"] for f in done["files"]] == ["made-by-bat.txt"]


def test_start_in_a_given_folder_keeps_the_script_beside_its_files(stack, alice, tmp_path):
    target = tmp_path / "reports" / "daily"  # made by the run: it does not exist yet
    script = upload_files(
        alice,
        [
            ("job.py", READS_INI.encode() + b"open('out.txt', 'w').write('hi')\n"),
            ("settings.ini", INI),
        ],
    )
    r = set_folder(alice, script, "path", str(target))
    assert r.status_code == 200, r.text
    assert r.json()["working_folder"] == {"mode": "path", "path": str(target)}
    done, out = run_once(alice, script)
    assert done["status"] == "succeeded", out
    assert out == [f"job.py db.example.test {target}"]
    assert (target / "out.txt").read_text() == "hi"
    assert sorted(os.listdir(target)) == ["out.txt"]  # the script's files stay in its folder
    assert done["files"] == [{"name": "out.txt", "size": 2, "stored": True, "reason": None}]


@pytest.mark.parametrize("inside", ["", "outputs", "workspaces/1", ".."])
def test_it_refuses_to_start_in_scriptflows_own_folder(stack, alice, inside):
    script = upload(alice, "print(1)\n")
    path = os.path.normpath(stack.home / inside) if inside else str(stack.home)
    r = set_folder(alice, script, "path", path)
    assert r.status_code == 422 and "ScriptFlow" in r.json()["detail"]
    assert alice.get(f"/scripts/{script['id']}").json()["working_folder"]["mode"] == "script"


def test_a_fresh_folder_is_empty_each_time_and_its_files_are_kept_with_the_run(stack, alice):
    source = (
        "import os, json\nprint(json.dumps(sorted(os.listdir('.'))))\n"
        "open('result.json', 'w').write('{\"ok\": true}')\n"
    )
    script = upload(alice, source, filename="fresh.py")
    assert set_folder(alice, script, "fresh").status_code == 200
    for _ in range(2):
        done, out = run_once(alice, script)
        assert done["status"] == "succeeded" and json.loads(out[0]) == []
        assert [f["name"] for f in done["files"]] == ["result.json"]
        r = alice.get(f"/runs/{done['id']}/files/result.json")
        assert r.json() == {"ok": True}
    assert not (stack.home / "work" / done["id"]).exists()


def test_a_zip_with_a_sub_folder_runs_as_it_was_laid_out(stack, alice):
    job = (
        b"from pathlib import Path\n"
        b"here = Path(__file__).parent\n"
        b"print((here / 'conf' / 'settings.ini').read_text().strip())\n"
        b"print(open('sql/query.sql').read().strip())\n"
    )
    data = a_zip(
        {
            "export/job.py": job,
            "export/conf/settings.ini": b"[a]",
            "export/sql/query.sql": b"select 1;",
        }
    )
    r = alice.post("/scripts", files={"file": ("export.zip", data)}, data={"name": unique("z")})
    assert r.status_code == 201, r.text
    script = r.json()
    assert [f["name"] for f in script["files"]] == ["job.py", "conf/settings.ini", "sql/query.sql"]
    done, out = run_once(alice, script)
    assert done["status"] == "succeeded" and out == ["[a]", "select 1;"], out
    r = alice.get(f"/scripts/{script['id']}/files/sql/query.sql")
    assert r.content == b"select 1;"


def store_objects(stack) -> set[str]:
    return {p.name for p in (stack.home / "store").rglob("*") if p.is_file()}


@pytest.mark.parametrize(
    ("parts", "status", "words"),
    [
        ([("a.zip", a_zip({"job.py": b"print(1)", "../../evil.ini": b"x"}))], 422, ".."),
        ([("a.zip", a_zip({"job.py": b"print(1)", "/etc/evil": b"x"}))], 422, "absolute"),
        ([("a.zip", a_zip({"a.py": b"print(1)", "b.py": b"print(2)"}))], 422, "entry"),
        ([("a.zip", a_zip({"notes.txt": b"x", "data.csv": b"y"}))], 400, ".py"),
        (
            [("a.zip", a_zip({"job.py": b"print(1)", "big.bin": b"\0" * (10 * 2**20 + 1)}))],
            413,
            "10 MB",
        ),
        ([("a.zip", b"PK\x03\x04garbage")], 400, ".zip"),
        ([("job.py", b"print(1)"), ("CON.ini", b"x")], 422, "device"),
        ([("job.py", b"print(1)"), ("Job.PY", b"print(2)")], 422, "same file"),
    ],
)
def test_it_refuses_a_bad_upload_and_stores_nothing(stack, alice, parts, status, words):
    before_store, before_total = store_objects(stack), alice.get("/scripts").json()["total"]
    r = alice.post("/scripts", files=[("file", p) for p in parts], data={"name": unique("bad")})
    assert r.status_code == status, r.text
    assert words in r.json()["detail"]
    assert store_objects(stack) == before_store
    assert alice.get("/scripts").json()["total"] == before_total


def test_a_new_version_replaces_the_script_or_the_whole_set(alice):
    script = upload_files(alice, [("job.py", READS_INI.encode()), ("settings.ini", INI)])
    url = f"/scripts/{script['id']}/content"
    # A raw body (or one .py) replaces the script: its other files stay.
    r = alice.put(url, content=READS_INI.encode() + b"print('v2')\n")
    assert r.status_code == 200 and r.json()["version"] == 2
    assert [f["name"] for f in r.json()["files"]] == ["job.py", "settings.ini"]
    # Several files replace them all, and may rename the script's file.
    r = alice.put(
        url,
        files=[
            ("file", ("main.py", b"print(open('extra.txt').read())\n")),
            ("file", ("extra.txt", b"x")),
        ],
    )
    assert r.status_code == 200, r.text
    assert r.json()["filename"] == "main.py" and r.json()["version"] == 3
    assert [f["name"] for f in r.json()["files"]] == ["main.py", "extra.txt"]
    r = alice.put(url, files=[("file", ("a.zip", a_zip({"x.py": b"1", "y.py": b"2"})))])
    assert r.status_code == 422 and alice.get(f"/scripts/{script['id']}").json()["version"] == 3
    r = alice.put(
        url,
        files=[("file", ("a.zip", a_zip({"x.py": b"print(1)", "y.py": b"2"})))],
        data={"entry": "x.py"},
    )
    assert r.status_code == 200 and r.json()["filename"] == "x.py"


def test_the_scripts_folder_is_browsed_and_downloaded_and_never_escaped(stack, alice, bob):
    source = (
        "import os\nos.makedirs('logs/2026', exist_ok=True)\n"
        "open('logs/2026/a.log', 'w').write('A')\n"
    )
    script = upload(alice, source, filename="logger.py")
    done, _out = run_once(alice, script)
    assert done["status"] == "succeeded"
    assert [f["name"] for f in done["files"]] == ["logs/2026/a.log"]
    base = f"/scripts/{script['id']}/workspace"
    top = alice.get(base).json()
    assert [(e["name"], e["type"]) for e in top["entries"]] == [
        ("logs", "folder"),
        ("logger.py", "file"),
    ]
    sub = alice.get(f"{base}/logs/2026").json()
    assert sub["path"] == "logs/2026" and sub["entries"][0]["name"] == "a.log"
    assert alice.get(f"{base}/logs/2026/a.log").content == b"A"
    # A link a script left, pointing out of the folder, leads nowhere.
    folder = stack.home / "workspaces" / str(script["id"])
    secret = stack.home / "secret_key"
    (folder / "key").symlink_to(secret if secret.exists() else stack.home / "up.out")
    (folder / "home").symlink_to(stack.home)
    escapes = ("key", "home/up.out", "%2E%2E/1/x", "logs/%2E%2E/%2E%2E/%2E%2E/up.out", "nope")
    for path in escapes:
        r = alice.get(f"{base}/{path}")
        assert r.status_code == 404, (path, r.status_code, r.text[:100])
    assert {e["name"] for e in alice.get(base).json()["entries"]} == {"logs", "logger.py"}
    # Someone else's script folder and run files do not exist for bob.
    assert bob.get(base).status_code == 404
    assert bob.get(f"{base}/logs/2026/a.log").status_code == 404
    assert bob.get(f"/runs/{done['id']}/files/logs/2026/a.log").status_code == 404
    assert alice.get(f"/runs/{done['id']}/files/nope.txt").status_code == 404
    assert alice.get(f"/runs/{done['id']}/files/%2E%2E/{done['id']}.log").status_code == 404


def test_a_deleted_scripts_folder_is_kept(stack, alice):
    script = upload(alice, "open('data.txt', 'w').write('keep me')\n")
    run_once(alice, script)
    assert alice.delete(f"/scripts/{script['id']}").status_code == 204
    assert (stack.home / "workspaces" / str(script["id"]) / "data.txt").read_text() == "keep me"


def test_the_deployment_carries_the_files_to_the_run(stack, alice):
    script = upload_files(alice, [("job.py", b"print(1)\n"), ("a.ini", b"x")])
    with stack.prefect() as p:
        deps = p.post(
            "/deployments/filter", json={"deployments": {"name": {"any_": [script["name"]]}}}
        ).json()
    assert [f["name"] for f in deps[0]["parameters"]["files"]] == ["job.py", "a.ini"]
    assert Path(deps[0]["parameters"]["filename"]).name == "job.py"


@pytest.mark.parametrize(
    "url",
    [
        "/scripts/999999999/workspace",
        "/scripts/999999999/workspace/a.txt",
        "/scripts/999999999/files/job.py",
        "/runs/not-a-run/files/a.txt",
        "/runs/00000000-0000-4000-8000-000000000000/files/a.txt",
    ],
)
def test_the_file_routes_answer_404_for_what_does_not_exist(alice, url):
    r = alice.get(url)
    assert r.status_code == 404 and r.json()["detail"]


def test_odd_names_in_the_file_routes_are_404_not_500(alice):
    script = upload(alice, "open('x.txt', 'w').write('x')\n")
    done, _out = run_once(alice, script)
    for url in (
        f"/scripts/{script['id']}/workspace/a%00b",
        f"/scripts/{script['id']}/workspace/{'n' * 300}",
        f"/scripts/{script['id']}/workspace/x.txt/deeper",
        f"/scripts/{script['id']}/files/a%00b",
        f"/runs/{done['id']}/files/x.txt%00",
        f"/runs/{done['id']}/files/{'n' * 5000}",
    ):
        r = alice.get(url)
        assert r.status_code == 404 and r.json()["detail"], (url, r.status_code)
    assert alice.get(f"/scripts/{script['id']}/workspace/x.txt").content == b"x"
    assert alice.get("/scripts/nope/workspace").status_code == 404  # an id of any shape
