"""The sandbox without a stack: Landlock rules, a real sandboxed process, the switch, and
secrets kept out of /proc/<pid>/environ; the home made private at start."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from scriptflow_prefect.execution import landlock
from scriptflow_prefect.execution.environment import ensure_script_python
from scriptflow_prefect.execution.process import run_script_process
from scriptflow_prefect.execution.sandbox import Sandbox, sandbox_state
from tests.conftest import IN_CI, private_home_base

PROBE = r"""
import os, sys
for name, action in [
    ("secret", lambda: open(sys.argv[1]).read()),
    ("run folder", lambda: open("out.txt", "w").write("x")),
    ("env", lambda: open(os.path.join(sys.prefix, "planted.py"), "w").write("x")),
    ("hostname", lambda: open("/etc/hostname").read()),
]:
    try:
        action()
        print(name, "allowed")
    except OSError:
        print(name, "denied")
"""


@pytest.fixture
def landlock_here():
    if landlock.abi_version() < 1:
        if IN_CI:
            pytest.fail("CI's kernel has Landlock: the sandbox must be tested there")
        pytest.skip("no Landlock in this kernel")


def test_it_allows_everything_beside_the_hidden_path_and_nothing_in_it(tmp_path):
    home = tmp_path / "home"
    (home / "work" / "run").mkdir(parents=True)
    (home / "env").mkdir()
    (tmp_path / "beside").mkdir()
    (tmp_path / "link").symlink_to(home)
    found = dict(landlock.rules([str(home)], [str(home / "work/run")], [str(home / "env")], 7))
    assert found[str(tmp_path / "beside")] == landlock.all_rights(7)
    assert str(tmp_path / "link") in found  # listed, but add_rule skips a symbolic link
    assert found[str(home / "work/run")] == landlock.all_rights(7)
    assert found[str(home / "env")] == landlock.READ_ONLY
    assert not any(
        p == str(home) or p.startswith(f"{home}/") and "work" not in p and "env" not in p
        for p in found
    )


def test_a_read_only_folder_holding_the_home_does_not_open_it(tmp_path):
    home = tmp_path / "code" / "home"
    home.mkdir(parents=True)
    (tmp_path / "code" / "lib").mkdir()
    found = dict(landlock.rules([str(home)], [], [str(tmp_path / "code")], 7))
    assert str(tmp_path / "code") not in found
    assert found[str(tmp_path / "code" / "lib")] == landlock.READ_ONLY


def test_a_sandboxed_script_keeps_its_work_and_loses_the_home(landlock_here):
    home = private_home_base() / f"unit-{os.getpid()}"
    run = home / "work" / "run"
    run.mkdir(parents=True)
    (home / "secret_key").write_text("s3cret")
    (run / "probe.py").write_text(PROBE)
    python = ensure_script_python(home / "script-venv")
    lines: list[str] = []
    try:
        for enforced in (True, False):
            lines.clear()
            sandbox = Sandbox((home,), (run,), (home / "script-venv",), enforced)
            result = run_script_process(
                run / "probe.py",
                "python",
                run,
                timeout=60,
                on_line=lambda _ts, _stream, text: lines.append(text),
                cancel=threading.Event(),
                python=python,
                sandbox=sandbox,
                arguments=[str(home / "secret_key")],
            )
            assert result.outcome == "succeeded", lines
            expected = "denied" if enforced else "allowed"
            assert lines == [
                f"secret {expected}",
                "run folder allowed",
                f"env {expected}",
                "hostname allowed",
            ]
    finally:
        subprocess.run(["rm", "-rf", str(home)], check=False)


def test_sandbox_off_is_said_loudly(tmp_path):
    state = sandbox_state("off", tmp_path)
    assert not state.enforced and "SCRIPTFLOW_SANDBOX=off" in state.detail


def test_a_home_under_tmp_is_warned_about(landlock_here):
    state = sandbox_state("on", Path("/tmp/x/home"))
    assert state.enforced and "/var/lib/scriptflow" in state.warnings[0]


def test_secrets_leave_the_environment_and_proc(tmp_path):
    secret_file = tmp_path / "smtp"
    secret_file.write_text("smtp-pass-991")
    code = (
        "import os, subprocess\n"
        "from scriptflow_prefect.platform.settings import load_settings\n"
        "from scriptflow_prefect.platform.secret_env import forget_secret_variables\n"
        "s = load_settings()\n"
        "forget_secret_variables()\n"
        "raw = open(f'/proc/{os.getpid()}/environ', 'rb').read()\n"
        "child = subprocess.run(['env'], capture_output=True, text=True).stdout\n"
        "print(s.admin_password.get_secret_value(), s.smtp_password.get_secret_value(),\n"
        "      b'admin-pass-771' in raw, 'admin-pass-771' in child, 'SMTP_PASSWORD' in child)\n"
    )
    env = {
        **os.environ,
        "SCRIPTFLOW_HOME": str(tmp_path / "home"),
        "SCRIPTFLOW_ADMIN_PASSWORD": "admin-pass-771",
        "SCRIPTFLOW_SMTP_PASSWORD_FILE": str(secret_file),
    }
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == ["admin-pass-771", "smtp-pass-991", "False", "False", "False"]


def test_an_existing_readable_home_is_made_private_at_start(tmp_path):
    home = tmp_path / "home"
    (home / "outputs").mkdir(parents=True)
    (home / "outputs" / "run.log").write_text("x")
    os.chmod(home, 0o755)
    os.chmod(home / "outputs", 0o755)
    os.chmod(home / "outputs" / "run.log", 0o644)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SCRIPTFLOW_", "PREFECT_"))}
    env["SCRIPTFLOW_HOME"] = str(home)
    r = subprocess.run(
        [sys.executable, "-m", "scriptflow_prefect.commands.cli", "token", "create", "nobody"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "private to this account" in r.stderr, r.stderr
    for path in (home, home / "outputs"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o700, path
    assert stat.S_IMODE((home / "outputs" / "run.log").stat().st_mode) == 0o600
    assert stat.S_IMODE((home / "scriptflow.db").stat().st_mode) == 0o600  # made under umask 077
