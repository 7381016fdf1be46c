"""Run-as on Windows keeps the account's password in a Prefect Secret block; these are the
platform-independent parts: the block's name, the error without it, and the password never
reaching a child's argv or environment, a log record or the output (it is masked)."""

from __future__ import annotations

import getpass
import logging
import sys
import threading
from pathlib import Path

import pytest

from scriptflow_prefect.execution.masking import Masker
from scriptflow_prefect.execution.models import RunAsPasswordMissing, run_as_secret_block
from scriptflow_prefect.execution.process import run_script_process

PASSWORD = "Tr0ub4dor&3-run-as"


@pytest.mark.parametrize(
    ("account", "block"),
    [
        ("scripts", "scriptflow-run-as-scripts"),
        ("CORP\\svc_Reports", "scriptflow-run-as-corp-svc-reports"),
        ("svc.reports@corp.example", "scriptflow-run-as-svc-reports-corp-example"),
        ("Ana$", "scriptflow-run-as-ana"),
    ],
)
def test_block_name_is_derived_from_the_account(account: str, block: str) -> None:
    assert run_as_secret_block(account) == block


def test_missing_password_names_the_block() -> None:
    error = RunAsPasswordMissing("CORP\\svc_Reports")
    assert "scriptflow-run-as-corp-svc-reports" in str(error)
    assert error.account == "CORP\\svc_Reports"


def test_password_reaches_no_argv_env_or_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # On POSIX the password is not needed (the account is switched without it) and ignored;
    # the script prints its whole argv and environment to show that none carries it.
    script = tmp_path / "show.py"
    script.write_text(
        "import os, sys\nprint(sys.argv)\nprint(sorted(os.environ.items()))\n", encoding="utf-8"
    )
    workdir = tmp_path / "work"
    workdir.mkdir()
    lines: list[str] = []
    mask = Masker([PASSWORD])
    with caplog.at_level(logging.DEBUG):
        result = run_script_process(
            script,
            "python",
            workdir,
            timeout=60,
            on_line=lambda ts, stream, text: lines.append(text),
            cancel=threading.Event(),
            python=Path(sys.executable),
            run_as=getpass.getuser(),
            run_as_password=PASSWORD,
        )
    assert result.outcome == "succeeded"
    assert len(lines) == 2 and "show.py" in lines[0]
    assert all(PASSWORD not in line for line in lines)
    assert PASSWORD not in caplog.text
    # A script that prints it anyway: the flow's Masker holds the password too.
    assert PASSWORD not in mask.text(f"pw={PASSWORD}")
