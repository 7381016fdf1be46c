"""The ScriptFlow email block by Prefect's own block standards, and the mail rules that need
no stack: which SMTP failures are retried, what a ScriptFlow automation asks the block."""

from __future__ import annotations

import smtplib
import socket
import subprocess
import sys
from datetime import UTC, datetime

import pytest
from prefect.blocks.core import Block
from prefect.testing.standard_test_suites import BlockStandardTestSuite
from prefect.utilities.callables import parameter_schema
from scriptflow_prefect.flows.send_digest import send_digest

from scriptflow_prefect import blocks
from scriptflow_prefect.notifications import prefect as notifications_prefect
from scriptflow_prefect.notifications.channels.email import deliveries, mailer

EXPORTED_BLOCKS = [
    obj
    for obj in vars(blocks).values()
    if isinstance(obj, type) and issubclass(obj, Block) and obj.__module__.startswith("scriptflow")
]


def test_the_package_exports_its_blocks():
    assert EXPORTED_BLOCKS  # the suite below must not pass by running over nothing


@pytest.mark.parametrize("block", EXPORTED_BLOCKS, ids=lambda b: b.__name__)
class TestEveryBlockOfThePackage(BlockStandardTestSuite):
    @pytest.fixture
    def block(self, block):  # the parametrized class, by Prefect's suite's fixture name
        return block

    def test_has_a_valid_image(self, block) -> None:
        # The suite downloads the logo (no network in tests): check it is an https address.
        assert str(block._logo_url).startswith("https://")


def test_prefect_finds_every_block_and_the_worker_through_the_entry_point():
    # Prefect's server looks the email block up by slug when an automation fires: it knows it
    # only if the `prefect.collections` entry point imports it. A fresh process, as the server
    # is: this one has imported the blocks already.
    slugs = [block.get_block_type_slug() for block in EXPORTED_BLOCKS]
    found = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys\n"
            "from prefect.blocks.core import Block\n"
            "from prefect.workers.base import BaseWorker\n"
            "for slug in sys.argv[1:]:\n"
            "    print(Block.get_block_class_from_key(slug).__module__)\n"
            "print(BaseWorker.get_worker_class_from_type('scriptflow').__module__)\n",
            *slugs,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert found.returncode == 0, found.stderr
    assert found.stdout.split() == [b.__module__ for b in EXPORTED_BLOCKS] + [
        "scriptflow_prefect.runs.worker"
    ]


def test_the_digest_deployment_describes_the_flows_parameters():
    # Core does not import flows/: the schema it gives Prefect is written out; keep it true.
    assert notifications_prefect.DIGEST_PARAMETERS == (
        parameter_schema(send_digest.fn).model_dump_for_openapi()
    )


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_it_treats_a_refused_connection_as_temporary():
    config = mailer.SmtpConfig(host="127.0.0.1", port=closed_port(), security="none", timeout=2)
    with pytest.raises(mailer.SendError) as caught:
        mailer.send(
            config,
            mailer.build_message(
                sender="a@example.test", to="b@example.test", rendered=mailer.Rendered("s", "t", "")
            ),
        )
    assert caught.value.temporary and "refused" in str(caught.value).lower()


@pytest.mark.parametrize(
    ("exc", "temporary", "text"),
    [
        (
            smtplib.SMTPAuthenticationError(535, b"5.7.8 Authentication credentials invalid"),
            False,
            "535 5.7.8 Authentication credentials invalid",
        ),
        (
            smtplib.SMTPSenderRefused(451, b"4.3.0 Try again later", "a@example.test"),
            True,
            "451 4.3.0 Try again later",
        ),
        (
            smtplib.SMTPServerDisconnected("Connection unexpectedly closed"),
            True,
            "Connection unexpectedly closed",
        ),
    ],
)
def test_it_keeps_the_smtp_servers_words_and_retries_only_4xx(monkeypatch, exc, temporary, text):
    class Failing:
        def __init__(self, *args, **kwargs):
            raise exc

    monkeypatch.setattr(smtplib, "SMTP", Failing)
    with pytest.raises(mailer.SendError) as caught:
        mailer.send(
            mailer.SmtpConfig(host="mail.example.test", port=25, security="none"),
            mailer.build_message(
                sender="a@example.test", to="b@example.test", rendered=mailer.Rendered("s", "t", "")
            ),
        )
    assert caught.value.temporary is temporary and str(caught.value) == text


def test_an_automation_request_round_trips_through_prefects_template():
    from jinja2 import Environment

    template = deliveries.run_request_template(
        7, "failure", [{"email": "ops@example.test", "language": "pt_BR", "timezone": None}]
    )
    rendered = (
        Environment()
        .from_string(template)
        .render(
            event={
                "resource": {"id": "prefect.flow-run.0b6e4c1e-8a1f-4a4e-9a8e-4f0e0f0e0f0e"},
                "event": "prefect.flow-run.TimedOut",
                "id": "x",
            },
            flow_run={"state": {"name": "TimedOut"}},
        )
    )
    request = deliveries.parse_run_request(rendered)
    assert request["script_id"] == 7 and request["outcome"] == "failure"
    assert str(request["run_id"]) == "0b6e4c1e-8a1f-4a4e-9a8e-4f0e0f0e0f0e"
    assert request["recipients"] == [
        {"email": "ops@example.test", "language": "pt_BR", "timezone": None}
    ]
    assert deliveries.parse_run_request("The backup failed.") is None


def test_addresses_that_could_break_a_template_are_refused():
    assert mailer.is_email("ops.team+alerts@example.co.uk")
    for bad in (
        "{{ x }}@example.test",
        'a"b@example.test',
        "a b@example.test",
        "nobody",
        "a@b",
        None,
    ):
        assert not mailer.is_email(bad)


def test_a_run_email_is_in_the_recipients_language_and_escapes_the_output():
    context = {
        "script_id": 3,
        "script_name": "backup",
        "failed": True,
        "more_lines": False,
        "run": {
            "status": "failed",
            "trigger": "scheduled",
            "exit_code": 3,
            "started_at": datetime(2026, 3, 5, 14, 7, tzinfo=UTC),
            "duration_seconds": 1.5,
            "message": "Exit code 3",
        },
        "lines": [
            {"stream": "stdout", "text": "copiando <tudo>"},
            {"stream": "stderr", "text": "disco cheio"},
        ],
        "line_count": 2,
        "run_url": "https://sf.example.test/runs/1",
        "script_url": "",
        "held_back": 0,
        "settings_url": "https://sf.example.test/scripts/3#notifications",
        "quiet_minutes": 15,
    }
    rendered = mailer.render("run", context, language="pt_BR", zone="America/Sao_Paulo")
    assert rendered.subject == "ScriptFlow: backup falhou"
    assert "Início: 05/03/2026 11:07" in rendered.text
    assert "Código de saída: 3" in rendered.text and "! disco cheio" in rendered.text
    assert "copiando &lt;tudo&gt;" in rendered.html and "⚠ disco cheio" in rendered.html


def test_a_digest_counts_failures_slowest_scripts_switched_off_schedules_and_what_is_next():
    from datetime import timedelta
    from types import SimpleNamespace
    from uuid import uuid4

    from prefect.client.schemas.objects import FlowRun, State, StateType

    from scriptflow_prefect.notifications import digests

    until = datetime(2026, 3, 5, 8, 0, tzinfo=UTC)

    def flow_run(sid, state, minutes_ago, seconds=None, scheduled=False):
        start = until - timedelta(minutes=minutes_ago)
        return FlowRun(
            id=uuid4(),
            name="r",
            flow_id=uuid4(),
            state=State(type=state),
            parameters={"script_id": sid, "script_name": f"script {sid}"},
            tags=["scriptflow", f"script-{sid}"] + (["auto-scheduled"] if scheduled else []),
            expected_start_time=start,
            start_time=None if seconds is None else start,
            end_time=None if seconds is None else start + timedelta(seconds=seconds),
        )

    past = [
        flow_run(1, StateType.FAILED, 10, 2, scheduled=True),
        flow_run(1, StateType.COMPLETED, 70, 3),
        flow_run(2, StateType.COMPLETED, 20, 90),
    ]
    upcoming = [flow_run(2, StateType.SCHEDULED, -30)]

    class Client:
        def read_flow_runs(self, flow_run_filter, **kwargs):
            wanted = set(flow_run_filter.state.type.any_)
            if StateType.SCHEDULED in wanted:
                return upcoming
            return past if kwargs.get("offset", 0) == 0 else []

        def read_deployments(self, **kwargs):
            return [
                SimpleNamespace(
                    parameters={"script_id": 1}, schedules=[SimpleNamespace(active=False)]
                )
            ]

    facts = digests.collect(
        Client(), {1: "script 1", 2: "script 2"}, until - timedelta(days=1), until
    )
    summary = facts.summary([1, 2], "https://sf.example.test/")
    assert (summary["runs"], summary["failures"]) == (3, 1)
    assert [s.name for s in summary["failing"]] == ["script 1"]
    assert [s.name for s in summary["slowest"]] == ["script 2", "script 1"]
    assert [s.name for s in summary["disabled"]] == ["script 1"]
    assert [u["name"] for u in summary["upcoming"]] == ["script 2"]
    rendered = mailer.render("digest", {**summary, "period": "daily"}, language="en", zone="UTC")
    assert rendered.subject == "ScriptFlow daily summary: 3 runs, 1 failed"
    assert "Schedules switched off after failures in a row" in rendered.text
    assert "https://sf.example.test/scripts/1#schedule" in rendered.text
    assert "script 2" in rendered.text.split("What runs next")[1]
