"""Faithful text through the whole stack: legacy-encoded .py uploads, ordered output in the page
and the failure email, progress bars in the live view, .bat commands wine lacks, whole exit
codes, and the hint for scripts that wait for keyboard input."""

from __future__ import annotations

import re

import pytest
from browser.fixtures import axe_check, login
from conftest import (
    need_tool,
    output_of,
    start_stack,
    stop_stack,
    unique,
    upload,
    wait_run,
    wait_until,
)
from test_notifications import Mailbox, body

pytest_plugins = ["browser.fixtures"]

PROGRESS = """\
import sys, time
print("copying", flush=True)
for p in (0, 50, 100):
    sys.stderr.write(f"\\r{p:3d}%")
    sys.stderr.flush()
    time.sleep(2.5)
sys.stderr.write("\\n")
print("copied", flush=True)
"""


@pytest.fixture(scope="module")
def mailbox():
    box = Mailbox()
    box.start()
    yield box
    box.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory, mailbox):
    """A stack of our own that sends email to `mailbox` (overrides conftest's `stack`)."""
    s = start_stack(
        tmp_path_factory.mktemp("text-home"),
        {
            "SCRIPTFLOW_SMTP_HOST": "127.0.0.1",
            "SCRIPTFLOW_SMTP_PORT": str(mailbox.port),
            "SCRIPTFLOW_SMTP_SECURITY": "none",
            "SCRIPTFLOW_SMTP_FROM": "scriptflow@example.test",
        },
    )
    try:
        r = s.cli(
            "user",
            "add",
            "alice",
            "--email",
            "alice@example.test",
            "--password-stdin",
            input="alice-pass-123\n",
        )
        assert r.returncode == 0, r.stderr
        for name in ("admin", "alice"):
            r = s.cli("token", "create", name)
            assert r.returncode == 0, r.stderr
            s.tokens[name] = r.stdout.strip()
        yield s
    finally:
        stop_stack(s)


def start(client, script_id: int) -> str:
    r = client.post(f"/scripts/{script_id}/runs")
    assert r.status_code == 202, r.text
    return r.json()["id"]


def post_file(client, filename: str, data: bytes):
    return client.post("/scripts", files={"file": (filename, data)}, data={"name": unique("t")})


# --- Python sources in any encoding Python reads --------------------------------------------


def test_it_runs_a_cp1252_py_with_a_coding_line_and_prints_its_accents(alice):
    source = "# -*- coding: cp1252 -*-\nprint('Relatório concluído: ação')\n".encode("cp1252")
    r = post_file(alice, "relatorio.py", source)
    assert r.status_code == 201, r.text
    script = r.json()
    assert alice.get(f"/scripts/{script['id']}/content").content == source  # kept as sent

    finished = wait_run(alice, start(alice, script["id"]))

    assert finished["status"] == "succeeded"
    assert [(ln["stream"], ln["text"]) for ln in output_of(alice, finished["id"])] == [
        ("stdout", "Relatório concluído: ação")
    ]


def test_it_refuses_a_py_python_cannot_read_and_names_the_line(alice):
    r = post_file(alice, "bad.py", b"print('ok')\nprint('caf\xe9')\n")
    assert r.status_code == 400
    assert r.json()["detail"].startswith(
        "line 2: byte 0xe9 is not valid UTF-8 and the file declares no other encoding"
    )

    script = upload(alice, "print('ok')\n")
    r = alice.put(f"/scripts/{script['id']}/content", content=b"# coding: klingon\nprint(1)\n")
    assert r.status_code == 400
    assert r.json()["detail"] == "line 1: Python does not know the encoding klingon"
    assert alice.get(f"/scripts/{script['id']}").json()["version"] == 1  # nothing written


# --- order, progress, input -------------------------------------------------------------------


def test_a_print_before_a_raise_is_in_order_in_the_output_and_the_email(alice, mailbox):
    source = (
        "import sys\nfor i in range(200):\n    print(f'row {i}')\n"
        "    print(f'warn {i}', file=sys.stderr)\n"
        "print('about to fail')\nraise SystemExit('disk full')\n"
    )
    script = upload(alice, source, name=unique("ordered"))

    finished = wait_run(alice, start(alice, script["id"]))

    assert finished["status"] == "failed"
    expected = []
    for i in range(200):
        expected += [("stdout", f"row {i}"), ("stderr", f"warn {i}")]
    expected += [("stdout", "about to fail"), ("stderr", "disk full")]
    assert [(ln["stream"], ln["text"]) for ln in output_of(alice, finished["id"])] == expected
    text = alice.get(f"/runs/{finished['id']}/output.txt").text.splitlines()
    assert [row.split(" ", 1)[1] for row in text[-2:]] == [
        "stdout about to fail",
        "stderr disk full",
    ]

    mail = body(mailbox.wait_for(script["name"], timeout=90))
    assert mail.index("about to fail") < mail.index("! disk full")


def test_the_output_api_shows_the_line_a_progress_bar_is_drawing(alice):
    script = upload(alice, PROGRESS, name=unique("progress"))
    run_id = start(alice, script["id"])

    def current_is(text: str):
        body = alice.get(f"/runs/{run_id}/output").json()
        return body if body["current"] == {"stream": "stderr", "text": text} else None

    wait_until(lambda: current_is(" 50%"), 60, "the bar at 50%")
    wait_until(lambda: current_is("100%"), 30, "the bar at 100%")
    finished = wait_run(alice, run_id)

    body = alice.get(f"/runs/{run_id}/output").json()
    assert body["current"] is None and body["complete"]
    assert [(ln["stream"], ln["text"]) for ln in body["lines"]] == [
        ("stdout", "copying"),
        ("stderr", "100%"),
        ("stdout", "copied"),
    ]
    assert finished["status"] == "succeeded"


@pytest.mark.browser
def test_the_live_view_updates_a_progress_bar_on_one_line(page, alice):
    script = upload(alice, PROGRESS, name=unique("progress-live"))
    login(page, "alice")
    page.goto(f"/scripts/{script['id']}")
    page.get_by_role("button", name="Run now").click()
    page.wait_for_url(re.compile(r"/runs/[0-9a-f-]+$"))
    output = page.get_by_role("log", name="Script output")

    live = output.locator("#output-live")
    live.filter(has_text="50%").wait_for(timeout=60_000)
    assert output.locator(".line", has_text="%").count() == 1
    live.filter(has_text="100%").wait_for(timeout=30_000)
    assert output.locator(".line", has_text="%").count() == 1  # the same line, rewritten
    page.locator("#run-status .badge[data-status=succeeded]").wait_for(timeout=30_000)
    output.get_by_text("copied").wait_for()
    assert output.locator(".line").all_inner_texts() == ["copying", "100%", "copied"]


def test_a_script_that_waits_for_input_says_so(alice):
    script = upload(alice, "name = input('Your name: ')\nprint('hello', name)\n")

    finished = wait_run(alice, start(alice, script["id"]))

    assert finished["status"] == "failed"
    assert finished["message_code"] == "waits_for_input"
    assert "remove input()/pause" in finished["message"]


# --- .bat under wine --------------------------------------------------------------------------


@pytest.mark.wine
def test_a_bat_using_robocopy_is_flagged_and_never_started(alice):
    need_tool("wine", ".bat scripts run through wine on Linux")
    source = "@echo off\r\necho started\r\nrobocopy C:\\data D:\\backup /mir\r\n"
    script = upload(alice, source, filename="backup.bat")
    assert script["warnings"] == [
        "robocopy is not available on this Linux worker (wine); run this script on a Windows worker"
    ]
    assert alice.get(f"/scripts/{script['id']}").json()["warnings"] == script["warnings"]

    finished = wait_run(alice, start(alice, script["id"]), timeout=120)

    assert finished["status"] == "failed"
    assert finished["message_code"] == "commands_unavailable"
    assert finished["message"].startswith("Not started: robocopy not available")
    assert output_of(alice, finished["id"]) == []  # "started" was never printed


@pytest.mark.wine
def test_a_bat_keeps_exit_code_9009_and_its_accents(alice):
    need_tool("wine", ".bat scripts run through wine on Linux")
    source = "@echo off\r\necho concluída não ação\r\nnosuchcommand\r\n".encode("cp1252")
    r = post_file(alice, "job.bat", source)
    assert r.status_code == 201, r.text
    assert r.json()["warnings"] == []

    finished = wait_run(alice, start(alice, r.json()["id"]), timeout=120)

    assert (finished["status"], finished["exit_code"]) == ("failed", 9009)
    # stdout and stderr of a .bat are two pipes: which is read first is up to the scheduler.
    stdout = [ln["text"] for ln in output_of(alice, finished["id"]) if ln["stream"] == "stdout"]
    assert stdout == ["concluída não ação"]


@pytest.mark.browser
def test_the_script_page_lists_its_warnings(page, alice):
    script = upload(alice, "@echo off\r\ntimeout /t 5 /nobreak > nul\r\n", filename="wait.bat")
    login(page, "alice")
    page.goto(f"/scripts/{script['id']}")

    section = page.get_by_role("region", name="What may not work on this worker")
    assert section.get_by_role("listitem").all_inner_texts() == [
        "⚠ timeout is not available on this Linux worker (wine); run this script on a "
        "Windows worker"
    ]
    axe_check(page)
