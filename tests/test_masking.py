"""Secret values are replaced by *** in output lines (execution/masking.py)."""

from __future__ import annotations

import threading
from pathlib import Path

from scriptflow_prefect.execution.environment import ensure_script_python, script_env, scrubbed_env
from scriptflow_prefect.execution.masking import Masker
from scriptflow_prefect.execution.process import run_script_process


def test_it_masks_every_occurrence_longest_first():
    mask = Masker(["hunter22", "hunter22-admin"])
    assert mask.lines(["a hunter22 b hunter22-admin", "hunter22hunter22"]) == [
        "a *** b ***",
        "******",
    ]


def test_short_values_are_masked_only_where_they_stand_alone():
    mask = Masker(["ab7"])
    assert mask.lines(["pin ab7.", "xab7 ab7y ab7_z", "(ab7)"]) == [
        "pin ***.",
        "xab7 ab7y ab7_z",
        "(***)",
    ]


def test_a_value_with_line_breaks_is_masked_line_by_line():
    key = "-----BEGIN KEY-----\nMIIBOgIBAAJBAK\n-----END KEY-----"
    mask = Masker([key])
    assert mask.lines(key.splitlines()) == ["***", "***", "***"]
    assert mask.text(f"error: {key}") == "error: ***"


def test_nothing_to_mask_gives_the_same_lines_back():
    lines = ["one", "two"]
    assert Masker(["zzzz"]).lines(lines) is lines
    assert not Masker(["", "***"]) and Masker([]).lines(lines) is lines


def test_a_real_script_printing_its_secret_gets_masked_where_lines_are_delivered(tmp_path: Path):
    script = tmp_path / "job.py"
    script.write_text("import os\nprint('token=' + os.environ['TOKEN'])\n", encoding="utf-8")
    mask = Masker(["s3cr3t-value"])
    seen: list[str] = []
    result = run_script_process(
        script,
        "python",
        tmp_path,
        timeout=60,
        on_line=None,
        on_lines=lambda ts, stream, texts: seen.extend(mask.lines(texts)),
        cancel=threading.Event(),
        python=ensure_script_python(tmp_path / "venv"),
        env=script_env(scrubbed_env(), {"TOKEN": "s3cr3t-value"}),
    )
    assert result.exit_code == 0 and seen == ["token=***"]
