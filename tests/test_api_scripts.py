"""API.md "Scripts": upload, list, read, edit, version and delete; each script's Prefect
deployment kept in step; alice's scripts do not exist for bob. Against the session's real stack."""

from __future__ import annotations

import hashlib
import shlex
import subprocess
import sys
import threading
import time
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from conftest import RetryBusy, _healthy, free_port, unique, upload, wait_run

SCRIPT_FIELDS = {
    "id",
    "name",
    "description",
    "type",
    "filename",
    "size",
    "sha256",
    "version",
    "created_at",
    "updated_at",
    "owner",
    "timeout_seconds",
    "schedule",
    "last_run",
    "next_run_at",
}


def assert_error(r: httpx.Response, status: int) -> str:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"detail"}, body
    assert isinstance(body["detail"], str) and body["detail"].strip()
    return body["detail"]


def total(client: httpx.Client) -> int:
    r = client.get("/scripts")
    assert r.status_code == 200, r.text
    return r.json()["total"]


@pytest.fixture(scope="session")
def prefect_api(stack) -> httpx.Client:
    """Prefect's own API, reached the way `scriptflow prefect-env` tells a power user to."""
    r = stack.cli("prefect-env")
    assert r.returncode == 0, r.stderr
    exports = dict(
        shlex.split(line.removeprefix("export "))[0].split("=", 1) for line in r.stdout.splitlines()
    )
    user, _sep, password = exports["PREFECT_API_AUTH_STRING"].partition(":")
    with httpx.Client(
        base_url=stack.prefect_url + "/api",
        auth=(user, password),
        timeout=30,
        transport=RetryBusy(),
    ) as c:
        yield c


def deployments_named(prefect_api: httpx.Client, name: str) -> list[dict]:
    r = prefect_api.post("/deployments/filter", json={"deployments": {"name": {"any_": [name]}}})
    assert r.status_code == 200, r.text
    return r.json()


def deployment_of(prefect_api: httpx.Client, script: dict) -> dict:
    found = [
        d
        for d in deployments_named(prefect_api, script["name"])
        if d["parameters"].get("script_id") == script["id"]
    ]
    assert len(found) == 1, found
    return found[0]


# -- upload ---------------------------------------------------------------------------------
def test_it_uploads_a_python_script_with_every_field_of_the_script_object(alice):
    source = b"print('hello')\n"
    name = unique("hello")
    r = alice.post(
        "/scripts",
        files={"file": ("hello.py", source)},
        data={"name": name, "description": "says hello"},
    )
    assert r.status_code == 201, r.text
    s = r.json()
    assert set(s) >= SCRIPT_FIELDS
    assert isinstance(s["id"], int)
    assert s["name"] == name
    assert s["description"] == "says hello"
    assert s["type"] == "python"
    assert s["filename"] == "hello.py"
    assert s["size"] == len(source)
    assert s["sha256"] == hashlib.sha256(source).hexdigest()
    assert s["version"] == 1
    assert s["owner"] == "alice"
    assert isinstance(s["timeout_seconds"], int) and s["timeout_seconds"] > 0
    assert s["schedule"] is None and s["last_run"] is None and s["next_run_at"] is None
    created = datetime.fromisoformat(s["created_at"])
    assert created.tzinfo is not None
    assert datetime.fromisoformat(s["updated_at"]) >= created
    # And reading it back gives the same object.
    again = alice.get(f"/scripts/{s['id']}").json()
    assert {k: again[k] for k in SCRIPT_FIELDS} == {k: s[k] for k in SCRIPT_FIELDS}


def test_it_names_a_script_after_its_file_when_no_name_is_given(alice):
    stem = unique("nightly_backup")
    r = alice.post("/scripts", files={"file": (f"{stem}.py", b"print(1)\n")})
    assert r.status_code == 201, r.text
    assert r.json()["name"] == stem
    assert r.json()["filename"] == f"{stem}.py"


def test_it_uploads_a_bat_script(alice):
    s = upload(alice, "@echo off\r\necho hi\r\n", filename="job.bat")
    assert s["type"] == "batch"
    assert s["filename"] == "job.bat"


@pytest.mark.parametrize("filename", ["tool.exe", "deploy.sh", "Makefile", "notes.py.txt"])
def test_it_rejects_an_upload_that_is_not_py_or_bat(alice, filename):
    before = total(alice)
    r = alice.post(
        "/scripts", files={"file": (filename, b"print(1)\n")}, data={"name": unique("bad")}
    )
    detail = assert_error(r, 400)
    assert ".py" in detail and ".bat" in detail
    assert total(alice) == before


def test_it_rejects_a_python_script_that_is_not_utf8(alice):
    r = alice.post(
        "/scripts",
        files={"file": ("latin.py", "print('café')\n".encode("latin-1"))},
        data={"name": unique("latin")},
    )
    assert "UTF-8" in assert_error(r, 400)


@pytest.mark.parametrize("content", [b"", b"  \n\n"])
def test_it_rejects_an_empty_file(alice, content):
    r = alice.post(
        "/scripts", files={"file": ("empty.py", content)}, data={"name": unique("empty")}
    )
    assert "empty" in assert_error(r, 400).lower()


def test_it_rejects_a_file_over_10_mb_with_413(alice):
    before = total(alice)
    big = b"#" * (10 * 1024 * 1024) + b"\n"
    r = alice.post("/scripts", files={"file": ("big.py", big)}, data={"name": unique("big")})
    assert "10 MB" in assert_error(r, 413)
    assert total(alice) == before


def test_it_accepts_a_file_of_exactly_10_mb(alice):
    data = b"#" * (10 * 1024 * 1024 - 10) + b"\npass\n"
    data = data + b"#" * (10 * 1024 * 1024 - len(data))
    s = upload(alice, data.decode(), filename="edge.py")
    assert s["size"] == 10 * 1024 * 1024


def test_it_refuses_a_duplicate_name_with_409_and_writes_nothing(alice, bob, admin, prefect_api):
    s = upload(alice, "print(1)\n")
    before = total(admin)
    r = alice.post(
        "/scripts", files={"file": ("other.py", b"print(2)\n")}, data={"name": s["name"]}
    )
    assert s["name"] in assert_error(r, 409)
    # Names are unique across users and regardless of case.
    r = bob.post(
        "/scripts", files={"file": ("other.py", b"print(2)\n")}, data={"name": s["name"].upper()}
    )
    assert_error(r, 409)
    assert total(admin) == before
    assert deployment_of(prefect_api, s)["parameters"]["version"] == 1


@pytest.mark.parametrize("filename", ["../../x.py", "..\\..\\x.py", "/etc/x.py"])
def test_it_keeps_only_the_last_part_of_an_uploaded_file_name(stack, alice, filename):
    candidates = [
        (base / "../../x.py").resolve()
        for base in (stack.home, stack.home / "store", stack.home / "work", Path.cwd())
    ]
    candidates.append(Path("/etc/x.py"))
    existing_before = {p for p in candidates if p.exists()}
    s = upload(alice, "print('where am I')\n", filename=filename, name=unique("escape"))
    assert s["filename"] == "x.py"
    assert {p for p in candidates if p.exists()} == existing_before
    run = wait_run(alice, alice.post(f"/scripts/{s['id']}/runs").json()["id"])
    assert run["status"] == "succeeded"
    assert {p for p in candidates if p.exists()} == existing_before


def test_it_answers_422_with_a_sentence_when_the_file_field_is_missing(alice):
    detail = assert_error(alice.post("/scripts", data={"name": unique("nofile")}), 422)
    assert "file" in detail
    detail = assert_error(alice.post("/scripts", files={"document": ("a.py", b"print(1)\n")}), 422)
    assert "file" in detail


def test_it_rejects_a_name_that_prefect_cannot_use(alice):
    r = alice.post(
        "/scripts", files={"file": ("a.py", b"print(1)\n")}, data={"name": "a/b " + unique("slash")}
    )
    assert_error(r, 422)


# -- list -----------------------------------------------------------------------------------
def test_it_lists_scripts_with_search_type_sort_and_pages(alice):
    prefix = unique("listing")
    upload(alice, "print(1)\n", name=f"{prefix}-b")
    upload(alice, "@echo off\r\n", filename="a.bat", name=f"{prefix}-a")
    upload(alice, "print(3)\n", name=f"{prefix}-c")

    body = alice.get("/scripts", params={"q": prefix}).json()
    assert body["total"] == 3
    assert {s["name"] for s in body["items"]} == {f"{prefix}-{x}" for x in "abc"}

    body = alice.get("/scripts", params={"q": prefix.upper(), "type": "batch"}).json()
    assert body["total"] == 1 and body["items"][0]["name"] == f"{prefix}-a"
    body = alice.get("/scripts", params={"q": prefix, "type": "python"}).json()
    assert body["total"] == 2

    names = [
        s["name"]
        for s in alice.get("/scripts", params={"q": prefix, "sort": "name"}).json()["items"]
    ]
    assert names == [f"{prefix}-a", f"{prefix}-b", f"{prefix}-c"]
    names = [
        s["name"]
        for s in alice.get("/scripts", params={"q": prefix, "sort": "-name"}).json()["items"]
    ]
    assert names == [f"{prefix}-c", f"{prefix}-b", f"{prefix}-a"]
    names = [
        s["name"]
        for s in alice.get("/scripts", params={"q": prefix, "sort": "created"}).json()["items"]
    ]
    assert names == [f"{prefix}-b", f"{prefix}-a", f"{prefix}-c"]

    page1 = alice.get(
        "/scripts", params={"q": prefix, "sort": "name", "per_page": 2, "page": 1}
    ).json()
    page2 = alice.get(
        "/scripts", params={"q": prefix, "sort": "name", "per_page": 2, "page": 2}
    ).json()
    assert page1["total"] == page2["total"] == 3
    assert [s["name"] for s in page1["items"] + page2["items"]] == [
        f"{prefix}-a",
        f"{prefix}-b",
        f"{prefix}-c",
    ]
    page3 = alice.get("/scripts", params={"q": prefix, "per_page": 2, "page": 3}).json()
    assert page3 == {"items": [], "total": 3}


def test_it_treats_search_wildcards_literally(alice):
    prefix = unique("wild")
    upload(alice, "print(1)\n", name=f"{prefix}-xyz")
    assert alice.get("/scripts", params={"q": f"{prefix}-xyz"}).json()["total"] == 1
    assert alice.get("/scripts", params={"q": f"{prefix}-_yz"}).json()["total"] == 0
    assert alice.get("/scripts", params={"q": f"{prefix}%z"}).json()["total"] == 0


def test_it_lists_only_a_users_own_scripts_and_all_for_an_admin(alice, bob, admin):
    mine = upload(alice, "print(1)\n")
    assert mine["id"] in {
        s["id"] for s in alice.get("/scripts", params={"q": mine["name"]}).json()["items"]
    }
    assert bob.get("/scripts", params={"q": mine["name"]}).json() == {"items": [], "total": 0}
    assert admin.get("/scripts", params={"q": mine["name"]}).json()["total"] == 1


@pytest.mark.parametrize(
    "params",
    [
        {"page": 0},
        {"page": -1},
        {"page": "abc"},
        {"per_page": 0},
        {"per_page": 1000},
        {"type": "exe"},
        {"sort": "bogus"},
        {"q": "x" * 1000},
    ],
)
def test_it_answers_422_for_bad_list_parameters(alice, params):
    assert_error(alice.get("/scripts", params=params), 422)


# -- read, edit, delete ---------------------------------------------------------------------
def test_it_renames_and_describes_a_script_and_changes_its_timeout(alice):
    s = upload(alice, "print(1)\n")
    new_name = unique("renamed")
    r = alice.patch(
        f"/scripts/{s['id']}",
        json={"name": new_name, "description": "new words", "timeout_seconds": 42},
    )
    assert r.status_code == 200, r.text
    changed = r.json()
    assert (changed["name"], changed["description"], changed["timeout_seconds"]) == (
        new_name,
        "new words",
        42,
    )
    assert changed["version"] == 1  # details are not a new version
    assert alice.get(f"/scripts/{s['id']}").json()["name"] == new_name
    # A partial change leaves the rest alone.
    r = alice.patch(f"/scripts/{s['id']}", json={"timeout_seconds": 7})
    assert (r.json()["name"], r.json()["description"], r.json()["timeout_seconds"]) == (
        new_name,
        "new words",
        7,
    )


@pytest.mark.parametrize("timeout", [0, -1, 7 * 24 * 3600 + 1, "abc", 1.5, [5]])
def test_it_refuses_a_bad_timeout_with_422(alice, timeout):
    s = upload(alice, "print(1)\n")
    assert_error(alice.patch(f"/scripts/{s['id']}", json={"timeout_seconds": timeout}), 422)
    assert alice.get(f"/scripts/{s['id']}").json()["timeout_seconds"] == s["timeout_seconds"]


def test_it_refuses_an_unknown_field_with_422(alice):
    s = upload(alice, "print(1)\n")
    detail = assert_error(alice.patch(f"/scripts/{s['id']}", json={"colour": "red"}), 422)
    assert "colour" in detail


def test_it_refuses_a_patch_that_is_not_an_object(alice):
    s = upload(alice, "print(1)\n")
    assert_error(alice.patch(f"/scripts/{s['id']}", json=["name"]), 422)
    assert_error(
        alice.patch(
            f"/scripts/{s['id']}",
            content=b"{not json",
            headers={"content-type": "application/json"},
        ),
        422,
    )


def test_it_refuses_a_rename_to_an_existing_name_with_409_and_changes_nothing(alice):
    first, second = upload(alice, "print(1)\n"), upload(alice, "print(2)\n")
    r = alice.patch(
        f"/scripts/{second['id']}", json={"name": first["name"], "description": "not applied"}
    )
    assert_error(r, 409)
    now = alice.get(f"/scripts/{second['id']}").json()
    assert (now["name"], now["description"]) == (second["name"], second["description"])


def test_it_refuses_an_empty_name_on_rename(alice):
    s = upload(alice, "print(1)\n")
    assert_error(alice.patch(f"/scripts/{s['id']}", json={"name": "   "}), 422)
    assert alice.get(f"/scripts/{s['id']}").json()["name"] == s["name"]


def test_it_deletes_a_script_but_keeps_its_runs_in_history(alice, prefect_api):
    s = upload(alice, "print('before delete')\n")
    run = wait_run(alice, alice.post(f"/scripts/{s['id']}/runs").json()["id"])
    assert run["status"] == "succeeded"
    deployment_of(prefect_api, s)

    r = alice.delete(f"/scripts/{s['id']}")
    assert r.status_code == 204 and r.content == b""
    assert_error(alice.get(f"/scripts/{s['id']}"), 404)
    assert_error(alice.delete(f"/scripts/{s['id']}"), 404)
    assert s["id"] not in {
        x["id"] for x in alice.get("/scripts", params={"q": s["name"]}).json()["items"]
    }
    assert deployments_named(prefect_api, s["name"]) == []

    history = alice.get("/runs", params={"script_id": s["id"]}).json()
    assert history["total"] == 1
    assert history["items"][0]["id"] == run["id"]
    assert history["items"][0]["script_id"] == s["id"]
    assert alice.get(f"/runs/{run['id']}").json()["status"] == "succeeded"
    # The name is free again.
    again = upload(alice, "print(1)\n", name=s["name"])
    assert again["id"] != s["id"]


def test_it_answers_404_for_a_script_that_does_not_exist(alice):
    assert_error(alice.get("/scripts/999999999"), 404)
    assert_error(alice.get("/scripts/not-a-number"), 404)  # not an id: no such script


# -- content and versions -------------------------------------------------------------------
def test_it_serves_the_current_content_as_text(alice):
    source = "print('héllo')\n"
    s = upload(alice, source)
    r = alice.get(f"/scripts/{s['id']}/content")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    assert r.content == source.encode()


def test_it_makes_a_new_version_from_a_raw_body_or_a_multipart_file(alice):
    s = upload(alice, "print(1)\n")
    r = alice.put(
        f"/scripts/{s['id']}/content", content=b"print(2)\n", headers={"content-type": "text/plain"}
    )
    assert r.status_code == 200, r.text
    assert r.json()["version"] == 2
    assert r.json()["sha256"] == hashlib.sha256(b"print(2)\n").hexdigest()
    assert alice.get(f"/scripts/{s['id']}/content").content == b"print(2)\n"

    r = alice.put(f"/scripts/{s['id']}/content", files={"file": ("whatever.py", b"print(3)\n")})
    assert r.status_code == 200, r.text
    assert r.json()["version"] == 3
    assert r.json()["size"] == len(b"print(3)\n")
    assert alice.get(f"/scripts/{s['id']}/content").content == b"print(3)\n"

    versions = alice.get(f"/scripts/{s['id']}/versions").json()["items"]
    assert [v["version"] for v in versions] == [3, 2, 1]
    for v, body in zip(versions, (b"print(3)\n", b"print(2)\n", b"print(1)\n"), strict=True):
        assert set(v) >= {"version", "sha256", "size", "created_at", "author"}
        assert v["sha256"] == hashlib.sha256(body).hexdigest()
        assert v["size"] == len(body)
        assert v["author"] == "alice"
        assert alice.get(f"/scripts/{s['id']}/versions/{v['version']}/content").content == body


def test_it_refuses_bad_new_content_and_keeps_the_version(alice):
    s = upload(alice, "print(1)\n")
    assert_error(alice.put(f"/scripts/{s['id']}/content", content=b""), 400)
    assert_error(alice.put(f"/scripts/{s['id']}/content", content=b"\xff\xfe bad"), 400)
    assert_error(
        alice.put(f"/scripts/{s['id']}/content", files={"file": ("x.bat", b"@echo off\r\n")}), 400
    )
    assert_error(
        alice.put(f"/scripts/{s['id']}/content", files={"other": ("x.py", b"print(1)\n")}), 422
    )
    assert_error(
        alice.put(f"/scripts/{s['id']}/content", content=b"#" * (10 * 1024 * 1024 + 1)), 413
    )
    now = alice.get(f"/scripts/{s['id']}").json()
    assert now["version"] == 1
    assert [v["version"] for v in alice.get(f"/scripts/{s['id']}/versions").json()["items"]] == [1]


# -- Prefect deployment ---------------------------------------------------------------------
def test_it_keeps_a_prefect_deployment_per_script_in_step(alice, prefect_api):
    s = upload(alice, "print(1)\n")
    d = deployment_of(prefect_api, s)
    assert d["name"] == s["name"]
    assert "scriptflow" in d["tags"]
    assert d["parameters"]["script_id"] == s["id"]
    assert d["parameters"]["version"] == 1
    assert d["work_pool_name"] == "scriptflow"

    r = alice.put(f"/scripts/{s['id']}/content", content=b"print(2)\n")
    assert r.status_code == 200, r.text
    d = deployment_of(prefect_api, s)
    assert d["parameters"]["version"] == 2
    assert d["parameters"]["sha256"] == hashlib.sha256(b"print(2)\n").hexdigest()

    new_name = unique("moved")
    r = alice.patch(f"/scripts/{s['id']}", json={"name": new_name, "timeout_seconds": 9})
    assert r.status_code == 200, r.text
    d = deployment_of(prefect_api, r.json())
    assert d["name"] == new_name
    assert d["parameters"]["version"] == 2
    assert d["parameters"]["timeout_seconds"] == 9
    assert "scriptflow" in d["tags"]
    assert deployments_named(prefect_api, s["name"]) == []


class RefusingProxy(ThreadingHTTPServer):
    """Prefect's API on another loopback port: every request goes through, except a DELETE of
    a deployment in `refuse`, a POST to a path in `refuse_posts` (e.g. "/api/deployments/")
    and a PATCH to a path under one in `refuse_patches` (e.g. "/api/deployments/": an edit
    updates the deployment in place), answered 500 as Prefect answers when its database
    fails."""

    daemon_threads = True

    def __init__(self, target: str):
        self.target = target
        self.refuse: set[str] = set()
        self.refuse_posts: set[str] = set()
        self.refuse_patches: set[str] = set()
        self.upstream = httpx.Client(timeout=60)
        super().__init__(("127.0.0.1", 0), _Forward)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Forward(BaseHTTPRequestHandler):
    server: RefusingProxy

    def _answer(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        refused = (
            self.command == "DELETE"
            and self.path.rstrip("/").rsplit("/", 1)[-1] in self.server.refuse
        ) or (self.command == "POST" and self.path.split("?")[0] in self.server.refuse_posts)
        refused = refused or (
            self.command == "PATCH"
            and any(self.path.startswith(p) for p in self.server.refuse_patches)
        )
        if refused:
            self._send(500, b'{"detail": "database is locked"}', {})
            return
        headers = {
            k: v for k, v in self.headers.items() if k.lower() not in ("host", "accept-encoding")
        }
        r = self.server.upstream.request(
            self.command, self.server.target + self.path, headers=headers, content=body
        )
        self._send(r.status_code, r.content, r.headers)

    def _send(self, status: int, content: bytes, headers) -> None:
        self.send_response(status)
        for k, v in headers.items():
            if k.lower() not in ("content-length", "content-encoding", "transfer-encoding"):
                self.send_header(k, v)
        self.send_header("Content-Type", headers.get("content-type", "application/json"))
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        self.wfile.write(content)

    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _answer

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def refusing_web(stack):
    """A second overlay (`scriptflow web`) on the stack's home and database whose Prefect
    client goes through a RefusingProxy: Prefect refuses what the test tells it to."""
    proxy = RefusingProxy(stack.prefect_url)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    port = free_port()
    auth = (stack.home / "prefect" / "auth_string").read_text().strip()
    env = {
        **stack.env,
        "SCRIPTFLOW_PORT": str(port),
        "SCRIPTFLOW_PREFECT_API_URL": proxy.url + "/api",
        "SCRIPTFLOW_PREFECT_AUTH_STRING": auth,
    }
    log = stack.home / "refusing-web.out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "scriptflow_prefect.commands.cli", "web"],
        env=env,
        stdout=open(log, "wb"),
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    try:
        while not _healthy(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("scriptflow web did not become healthy:\n" + log.read_text())
            time.sleep(0.3)
        with httpx.Client(
            base_url=url + "/api/v1",
            headers={"Authorization": f"Bearer {stack.tokens['alice']}"},
            timeout=60,
        ) as client:
            yield proxy, client
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        proxy.shutdown()
        proxy.upstream.close()


def test_it_undoes_a_rename_when_prefect_does_not_delete_the_old_deployment(
    alice, prefect_api, refusing_web
):
    proxy, through_proxy = refusing_web
    s = upload(alice, "print(1)\n", description="before")
    old = deployment_of(prefect_api, s)
    proxy.refuse.add(old["id"])
    new_name = unique("never")

    r = through_proxy.patch(f"/scripts/{s['id']}", json={"name": new_name, "description": "after"})

    assert "not renamed" in assert_error(r, 503)
    kept = alice.get(f"/scripts/{s['id']}").json()
    assert (kept["name"], kept["description"]) == (s["name"], "before")
    # One deployment, the old one: the script cannot run twice on two schedules.
    assert deployment_of(prefect_api, s)["id"] == old["id"]
    assert deployments_named(prefect_api, new_name) == []

    # Once Prefect deletes again, the same rename goes through.
    proxy.refuse.clear()
    r = through_proxy.patch(f"/scripts/{s['id']}", json={"name": new_name})
    assert r.status_code == 200, r.text
    assert deployment_of(prefect_api, r.json())["name"] == new_name
    assert deployments_named(prefect_api, s["name"]) == []


# -- who sees what --------------------------------------------------------------------------
def test_it_hides_alices_script_from_bob_on_every_route(alice, bob):
    s = upload(alice, "print('alice only')\n")
    sid = s["id"]
    calls = [
        ("GET", f"/scripts/{sid}", {}),
        ("PATCH", f"/scripts/{sid}", {"json": {"name": unique("stolen")}}),
        ("DELETE", f"/scripts/{sid}", {}),
        ("GET", f"/scripts/{sid}/content", {}),
        ("PUT", f"/scripts/{sid}/content", {"content": b"print('bob was here')\n"}),
        ("PUT", f"/scripts/{sid}/content", {"files": {"file": ("b.py", b"print(0)\n")}}),
        ("GET", f"/scripts/{sid}/versions", {}),
        ("GET", f"/scripts/{sid}/versions/1/content", {}),
        ("POST", f"/scripts/{sid}/runs", {}),
    ]
    for method, path, kwargs in calls:
        r = bob.request(method, path, **kwargs)
        assert r.status_code == 404, (method, path, r.status_code, r.text)
        assert isinstance(r.json()["detail"], str)
    # The answer for alice's script is the one for a script that does not exist.
    assert bob.get(f"/scripts/{sid}").json()["detail"].replace(str(sid), "N") == (
        bob.get("/scripts/999999999").json()["detail"].replace("999999999", "N")
    )
    now = alice.get(f"/scripts/{sid}").json()
    assert (now["name"], now["version"]) == (s["name"], 1)
    assert alice.get("/runs", params={"script_id": sid}).json()["total"] == 0


def test_it_lets_an_admin_see_and_manage_anyones_script(alice, admin):
    s = upload(alice, "print('alice')\n")
    r = admin.get(f"/scripts/{s['id']}")
    assert r.status_code == 200 and r.json()["owner"] == "alice"
    assert admin.get(f"/scripts/{s['id']}/content").content == b"print('alice')\n"
    r = admin.patch(f"/scripts/{s['id']}", json={"description": "checked by admin"})
    assert r.status_code == 200 and r.json()["owner"] == "alice"
    assert alice.get(f"/scripts/{s['id']}").json()["description"] == "checked by admin"
