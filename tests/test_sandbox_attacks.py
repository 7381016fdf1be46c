"""Issue 12's attacks, as a non-admin's uploaded script through the real stack (run as root,
like CI, the case where the sandbox alone must hold): each fails; the same script's
legitimate work still succeeds. The stack's home is laid out as the README recommends."""

from __future__ import annotations

import io
import json
import os
import sys
import uuid
import zipfile
from pathlib import Path

import httpx
import psutil
import pytest

from tests.conftest import ADMIN_PASSWORD, need_tool, output_of, scratch_dir, upload, wait_run

ATTACKS = r"""
import ctypes, json, os, subprocess, sys, sysconfig
home, other_run, own_prefix = sys.argv[1], sys.argv[2], sys.argv[3]
ppid = os.getppid()
found = {}

def attempt(name, action):
    try:
        value = action()
        found[name] = "read: " + (value if isinstance(value, str) else repr(value))[:2000]
    except Exception as exc:
        found[name] = "denied: " + type(exc).__name__

def read(path, mode="r"):
    with open(path, mode) as handle:
        return handle.read()

def plant(folder):
    with open(os.path.join(folder, "sitecustomize.py"), "w") as handle:
        handle.write("print('planted')\n")
    return "planted in " + folder

def ptrace_attach():
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.ptrace(16, ppid, 0, 0) != 0:  # PTRACE_ATTACH
        raise PermissionError(os.strerror(ctypes.get_errno()))
    return "attached"

def server_environ():
    for pid in os.listdir("/proc"):
        try:
            if b"prefect_child" in read(f"/proc/{pid}/cmdline", "rb"):
                return read(f"/proc/{pid}/environ", "rb").decode(errors="replace")
        except OSError:
            continue
    raise LookupError("no Prefect server seen")

attempt("secret_key", lambda: read(os.path.join(home, "secret_key")))
attempt("auth_string", lambda: read(os.path.join(home, "prefect", "auth_string")))
attempt("scriptflow_db", lambda: read(os.path.join(home, "scriptflow.db"), "rb"))
attempt("prefect_db", lambda: read(os.path.join(home, "prefect", "prefect.db"), "rb"))
attempt("other_output", lambda: read(os.path.join(home, "outputs", other_run + ".log")))
attempt("list_home", lambda: os.listdir(home))
attempt("worker_mem", lambda: read(f"/proc/{ppid}/mem", "rb"))
attempt("ptrace", ptrace_attach)
attempt("plant_env", lambda: plant(sysconfig.get_paths()["purelib"]))
attempt("plant_interpreter", lambda: plant(sysconfig.get_paths()["stdlib"]))
attempt("plant_scriptflow", lambda: plant(own_prefix))
attempt("signal_worker", lambda: os.kill(ppid, 0))
# Readable as root whatever the sandbox (measured); what matters is what they hold.
attempt("worker_environ", lambda: read(f"/proc/{ppid}/environ", "rb").decode(errors="replace"))
attempt("server_environ", server_environ)
print(json.dumps(found))
"""

LEGIT = r"""
import json, os, subprocess, sys, urllib.request
marker, url = sys.argv[1], sys.argv[2]
with open(marker, "w") as handle:
    handle.write("made by a script")
with open("report.csv", "w") as handle:
    handle.write("a,b\n")
print(json.dumps({
    "hostname": open("/etc/hostname").read().strip(),
    "child": subprocess.run(["sh", "-c", "echo from a child"], capture_output=True,
                            text=True).stdout.strip(),
    "http": urllib.request.urlopen(url + "/health", timeout=10).status,
    "cwd_file": open("report.csv").read(),
}))
"""


def _printed(client: httpx.Client, script: dict, arguments: list[str]) -> dict:
    r = client.patch(f"/scripts/{script['id']}", json={"arguments": arguments})
    assert r.status_code == 200, r.text
    run = client.post(f"/scripts/{script['id']}/runs").json()
    done = wait_run(client, run["id"])
    lines = output_of(client, run["id"])
    assert done["status"] == "succeeded", (done, lines)
    return json.loads(lines[-1]["text"])


@pytest.fixture
def alice_private(private_stack):
    with private_stack.client("alice") as client:
        yield client


def test_a_script_cannot_reach_scriptflows_files_nor_its_processes(private_stack, alice_private):
    with private_stack.client("admin") as admin:
        other = upload(admin, "print('admin-only-output-7731')\n")
        other_run = admin.post(f"/scripts/{other['id']}/runs").json()["id"]
        assert wait_run(admin, other_run)["status"] == "succeeded"
    script = upload(alice_private, ATTACKS)
    found = _printed(alice_private, script, [str(private_stack.home), other_run, sys.prefix])
    for attack in (
        "secret_key",
        "auth_string",
        "scriptflow_db",
        "prefect_db",
        "other_output",
        "list_home",
        "worker_mem",
        "ptrace",
        "plant_env",
        "plant_interpreter",
        "plant_scriptflow",
        "signal_worker",
    ):
        assert found[attack].startswith("denied"), (attack, found[attack])
    auth = (private_stack.home / "prefect" / "auth_string").read_text().strip()
    secret_key = (private_stack.home / "secret_key").read_text().strip()
    for attack in ("worker_environ", "server_environ"):
        assert ADMIN_PASSWORD not in found[attack], attack
        assert auth.split(":")[1] not in found[attack], attack
        assert secret_key not in found[attack], attack
    # the admin's next run is not changed by anything the script tried to plant
    with private_stack.client("admin") as admin:
        again = admin.post(f"/scripts/{other['id']}/runs").json()["id"]
        assert wait_run(admin, again)["status"] == "succeeded"
        assert [line["text"] for line in output_of(admin, again)] == ["admin-only-output-7731"]


def test_the_same_script_still_does_its_legitimate_work(private_stack, alice_private):
    marker = (
        scratch_dir() / f"sf-legit-{uuid.uuid4().hex}.txt"
    )  # a new entry directly in /tmp (see scratch_dir)
    try:
        script = upload(alice_private, LEGIT)
        found = _printed(alice_private, script, [str(marker), private_stack.url])
        assert marker.read_text() == "made by a script"
    finally:
        marker.unlink(missing_ok=True)
    assert found["hostname"] == Path("/etc/hostname").read_text().strip()
    assert found["child"] == "from a child"
    assert found["http"] == 200
    assert found["cwd_file"] == "a,b\n"


def test_a_bat_runs_under_wine_in_the_sandbox(private_stack, alice_private):
    need_tool("wine", ".bat scripts run under wine on Linux")
    home = "Z:" + str(private_stack.home).replace("/", "\\")
    source = (
        "@echo off\r\n"
        "echo hello from cmd> out.txt\r\n"
        "type out.txt\r\n"
        f"type {home}\\secret_key\r\n"
        "echo secret read exit %ERRORLEVEL%\r\n"
        "exit /b 0\r\n"
    )
    script = upload(alice_private, source, filename="job.bat")
    run = alice_private.post(f"/scripts/{script['id']}/runs").json()
    done = wait_run(alice_private, run["id"], timeout=180)
    texts = [line["text"] for line in output_of(alice_private, run["id"])]
    assert done["status"] == "succeeded", (done, texts)
    assert "hello from cmd" in texts
    assert "secret read exit 1" in texts, texts
    secret_key = (private_stack.home / "secret_key").read_text().strip()
    assert not any(secret_key in text for text in texts)


PLANT_IN_ENVIRONMENT = r"""
# /// script
# dependencies = ['six']
# ///
import json, os, sys, sysconfig
import six
home = sys.argv[1]
found = {"six": six.__version__}

def attempt(name, action):
    try:
        action()
        found[name] = "done"
    except Exception as exc:
        found[name] = "denied: " + type(exc).__name__

def plant(folder):
    with open(os.path.join(folder, "sitecustomize.py"), "w") as handle:
        handle.write("print('planted')\n")

attempt("plant_environment", lambda: plant(sysconfig.get_paths()["purelib"]))
attempt("change_a_package", lambda: open(six.__file__, "a").write("print('changed')\n"))
attempt("uv_cache", lambda: os.listdir(os.path.join(home, "envs", "cache")))
print(json.dumps(found))
"""


def test_a_script_cannot_change_its_dependency_environment(private_stack, alice_private):
    """Root ignores the environment's read-only modes: the sandbox is what holds."""
    script = upload(alice_private, PLANT_IN_ENVIRONMENT)
    found = _printed(alice_private, script, [str(private_stack.home)])
    assert found["six"]
    for attack in ("plant_environment", "change_a_package", "uv_cache"):
        assert found[attack].startswith("denied"), (attack, found[attack])
    # another script using the same environment runs unchanged
    other = upload(alice_private, "import six\nprint('clean', six.__name__)\n")
    alice_private.patch(f"/scripts/{other['id']}", json={"requirements": ["six"]})
    run = alice_private.post(f"/scripts/{other['id']}/runs").json()
    assert wait_run(alice_private, run["id"], timeout=120)["status"] == "succeeded"
    assert [line["text"] for line in output_of(alice_private, run["id"])] == ["clean six"]


def test_health_says_runs_are_sandboxed(private_stack):
    body = httpx.get(private_stack.url + "/health", timeout=30).json()
    sandbox = body["components"]["sandbox"]
    assert sandbox["enforced"] is True and sandbox["mechanism"] == "landlock", sandbox
    assert "warnings" not in body


def test_the_home_is_private_after_start(private_stack):
    home = private_stack.home
    # 0700; a run-as account's passage (an ACL entry) shows as the group's --x mask
    assert home.stat().st_mode & 0o777 in (0o700, 0o710)
    shared = {home / "script-venv", home / "work"}
    # Dependency environments are read by the accounts scripts run as (read-only); their
    # package files are hard links into uv's cache (the same inodes: public packages, and
    # uv's own lock files, in a folder no other account can enter).
    shared |= {p for p in (home / "envs").glob("*") if p.is_dir() and len(p.name) == 16}
    shared.add(home / "envs" / "cache")
    for root, dirs, files in os.walk(home):
        dirs[:] = [d for d in dirs if Path(root, d) not in shared]
        for name in files:
            path = Path(root, name)
            if not path.is_symlink():
                assert path.stat().st_mode & 0o077 == 0, path


def test_no_scriptflow_process_shows_a_secret_in_its_environment(private_stack):
    auth = (private_stack.home / "prefect" / "auth_string").read_text().strip()
    stack_tree = [psutil.Process(private_stack.proc.pid)]
    stack_tree += stack_tree[0].children(recursive=True)
    assert len(stack_tree) >= 2  # the stack and its Prefect server at least
    for process in stack_tree:
        raw = Path(f"/proc/{process.pid}/environ").read_bytes()
        assert ADMIN_PASSWORD.encode() not in raw, process.cmdline()
        assert auth.encode() not in raw, process.cmdline()


FOLDER_ATTACKS = r"""
import json, os, sys
home, other = sys.argv[1], sys.argv[2]
found = {}
try:
    with open(os.path.join(home, "workspaces", other, "kept.txt")) as handle:
        found["other_folder"] = "read: " + handle.read()
except OSError as exc:
    found["other_folder"] = "denied: " + type(exc).__name__
# links left in its own kept folder, for the runner, the page or the next version to follow
for name, target in (("home", home), ("key", os.path.join(home, "secret_key"))):
    if not os.path.lexists(name):
        os.symlink(target, name)
open("mine.txt", "w").write("mine")
print(json.dumps(found))
"""


def test_a_script_cannot_reach_another_scripts_folder_nor_lead_out_of_its_own(
    private_stack, alice_private
):
    with private_stack.client("admin") as admin:
        other = upload(admin, "open('kept.txt', 'w').write('admin data 5521')\n")
        assert (
            wait_run(admin, admin.post(f"/scripts/{other['id']}/runs").json()["id"])["status"]
            == "succeeded"
        )
    script = upload(alice_private, FOLDER_ATTACKS)
    found = _printed(alice_private, script, [str(private_stack.home), str(other["id"])])
    assert found["other_folder"].startswith("denied"), found
    base = f"/scripts/{script['id']}/workspace"
    for path in ("key", "home/secret_key", "home/scriptflow.db"):
        assert alice_private.get(f"{base}/{path}").status_code == 404, path
    names = {e["name"] for e in alice_private.get(base).json()["entries"]}
    assert names == {"job.py", "mine.txt"}
    last = alice_private.get("/runs", params={"script_id": script["id"]}).json()["items"][0]
    assert [f["name"] for f in last["files"]] == ["mine.txt"]
    # A new version with home/evil.ini: the link is replaced by a folder, nothing reaches home.
    r = alice_private.put(
        f"/scripts/{script['id']}/content",
        files=[
            ("file", ("job.py", FOLDER_ATTACKS.encode())),
            ("file", ("x.zip", b"")),
        ],
    )
    assert r.status_code == 422  # a zip among several files
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w") as z:
        z.writestr("job.py", FOLDER_ATTACKS)
        z.writestr("home/evil.ini", "planted")
    r = alice_private.put(
        f"/scripts/{script['id']}/content", files={"file": ("v2.zip", zipped.getvalue())}
    )
    assert r.status_code == 200, r.text
    found = _printed(alice_private, script, [str(private_stack.home), str(other["id"])])
    assert not (private_stack.home / "evil.ini").exists()
    folder = private_stack.home / "workspaces" / str(script["id"])
    assert (folder / "home" / "evil.ini").read_text() == "planted"
    assert not (folder / "home").is_symlink()
