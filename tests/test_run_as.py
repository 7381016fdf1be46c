"""Run-as with real OS accounts made by the test (CI runs as root): the script runs as the
account, what it writes is the account's, it cannot read the home; an unknown account fails
the run with a message that names it."""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.conftest import IN_CI, output_of, scratch_dir, upload, wait_run

WHO = r"""
import json, os, subprocess, sys
marker = sys.argv[1]
with open(marker, "w") as handle:
    handle.write("x")
try:
    open(sys.argv[2]).read()
    home = "read"
except OSError as exc:
    home = "denied: " + type(exc).__name__
print(json.dumps({
    "id": subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip(),
    "env": [os.environ.get(k) for k in ("HOME", "USER", "LOGNAME")],
    "home": home,
}))
"""

_ACL = "system.posix_acl_access"


@pytest.fixture(scope="module")
def account():
    """A real account, and passage through folders it needs that this machine keeps private
    (the test interpreter lives under /root); all undone afterwards."""
    if os.geteuid() != 0:
        if IN_CI:
            pytest.fail("CI runs as root: run-as tests must run there")
        pytest.skip("creating accounts needs root")
    name = f"sfrun{os.getpid() % 100000}"
    subprocess.run(["useradd", "-m", "-s", "/usr/sbin/nologin", name], check=True)
    entry = pwd.getpwnam(name)
    saved = {}
    try:
        for folder in _private_ancestors(Path(os.path.realpath(_python()))):
            saved[folder] = _acl_of(folder)
            _let_pass(folder, entry.pw_uid)
        yield entry
    finally:
        for folder, acl in saved.items():
            if acl is None:
                os.removexattr(folder, _ACL)
            else:
                os.setxattr(folder, _ACL, acl)
        subprocess.run(["userdel", "-r", name], check=False, capture_output=True)


def _python() -> str:
    import sys

    return sys.executable


def _private_ancestors(path: Path) -> list[Path]:
    return [p for p in path.parents if not p.stat().st_mode & 0o001]


def _acl_of(folder: Path) -> bytes | None:
    try:
        return os.getxattr(folder, _ACL)
    except OSError:
        return None


def _let_pass(folder: Path, uid: int) -> None:
    mode = folder.stat().st_mode
    entries = [(1, (mode >> 6) & 7, 0xFFFFFFFF), (2, 1, uid), (4, (mode >> 3) & 7, 0xFFFFFFFF)]
    entries += [(0x10, ((mode >> 3) & 7) | 1, 0xFFFFFFFF), (0x20, mode & 7, 0xFFFFFFFF)]
    import struct

    raw = struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *e) for e in entries)
    os.setxattr(folder, _ACL, raw)


def test_a_script_runs_as_the_account_an_admin_gives_it(private_stack, account):
    marker = scratch_dir() / f"sf-run-as-{uuid.uuid4().hex}"
    with private_stack.client("admin") as admin:
        script = upload(admin, WHO)
        secret = str(private_stack.home / "secret_key")
        r = admin.patch(
            f"/scripts/{script['id']}",
            json={"run_as": account.pw_name, "arguments": [str(marker), secret]},
        )
        assert r.status_code == 200 and r.json()["run_as"] == account.pw_name, r.text
        run = admin.post(f"/scripts/{script['id']}/runs").json()
        done = wait_run(admin, run["id"])
        lines = output_of(admin, run["id"])
    try:
        assert done["status"] == "succeeded", (done, lines)
        printed = json.loads(lines[-1]["text"])
        assert printed["id"] == account.pw_name
        assert printed["env"] == [account.pw_dir, account.pw_name, account.pw_name]
        assert printed["home"].startswith("denied")
        assert marker.stat().st_uid == account.pw_uid
        assert marker.stat().st_gid == account.pw_gid
    finally:
        marker.unlink(missing_ok=True)
    # the run folder went; the home stayed closed: the account may only pass through it
    # (an ACL entry, which `ls -l` shows as the group's --x mask)
    assert not (private_stack.home / "work" / run["id"]).exists()
    assert private_stack.home.stat().st_mode & 0o077 in (0, 0o010)


def test_a_script_run_as_an_account_uses_its_dependency_environment(private_stack, account):
    with private_stack.client("admin") as admin:
        script = upload(admin, "import os, six\nprint(os.getuid(), six.__name__)\n")
        r = admin.patch(
            f"/scripts/{script['id']}",
            json={"run_as": account.pw_name, "requirements": ["six"]},
        )
        assert r.status_code == 200, r.text
        run = admin.post(f"/scripts/{script['id']}/runs").json()
        done = wait_run(admin, run["id"], timeout=120)
        lines = output_of(admin, run["id"])
    assert done["status"] == "succeeded", (done, lines)
    assert lines[-1]["text"] == f"{account.pw_uid} six"


def test_an_unknown_account_fails_the_run_and_says_which(private_stack):
    with private_stack.client("admin") as admin:
        script = upload(admin, "print('never')\n")
        admin.patch(f"/scripts/{script['id']}", json={"run_as": "no-such-account-42"})
        run = admin.post(f"/scripts/{script['id']}/runs").json()
        done = wait_run(admin, run["id"])
        texts = [line["text"] for line in output_of(admin, run["id"])]
    assert done["status"] == "failed", done
    assert "never" not in texts
    detail = admin_message(private_stack, run["id"])
    assert "no-such-account-42" in detail, detail


def admin_message(stack, run_id: str) -> str:
    with stack.prefect() as prefect:
        flow_run = prefect.get(f"/flow_runs/{run_id}").json()
    return flow_run["state"]["message"] or ""
