"""State messages are translated by their code (runs/messages.py), not by their English text;
a message without a code (older runs, Prefect's own) is shown as Prefect has it."""

from __future__ import annotations

import pytest

from scriptflow_prefect.platform import i18n
from scriptflow_prefect.runs.messages import TEMPLATES, RunMessage
from scriptflow_prefect.runs.words import run_message, status_label, trigger_label


@pytest.fixture
def pt_br():
    token = i18n.set_locale("pt_BR")
    zone = i18n.set_zone("America/Sao_Paulo")
    yield
    i18n._zone.reset(zone)
    i18n._current.reset(token)


def coded(name: str, **params) -> dict:
    """A run as the API serves it, with the message the flow wrote."""
    msg = RunMessage(name, params)
    return {"message": msg.text, "message_code": name, "message_params": params}


@pytest.mark.parametrize(
    ("code", "params", "portuguese"),
    [
        ("exit_code", {"code": 3}, "Código de saída 3"),
        ("exit_code", {"code": -9}, "Código de saída -9"),
        (
            "timed_out",
            {"seconds": 300},
            "Tempo esgotado após 300 s; a árvore de processos foi interrompida",
        ),
        ("cancelled", {}, "Cancelada; a árvore de processos foi interrompida"),
        ("cancelled_before_start", {}, "Cancelada antes de começar"),
        ("cancel_requested", {}, "Cancelamento solicitado"),
        (
            "missed_skipped",
            {"when": "2026-03-01T11:00+00:00"},
            "Horário 01/03/2026 08:00 perdido (o ScriptFlow não estava em execução); ignorada "
            "conforme a política do script.",
        ),
        (
            "overlap_skipped",
            {},
            "A execução anterior deste script ainda estava em andamento; ignorada conforme a "
            "política do script.",
        ),
        (
            "launcher_missing",
            {},
            "Executar scripts .bat requer um executor Windows ou o wine nesta máquina",
        ),
    ],
)
def test_it_translates_a_message_by_its_code(pt_br, code, params, portuguese) -> None:
    assert run_message(coded(code, **params)) == portuguese


def test_it_writes_every_message_in_english_for_prefect() -> None:
    msg = RunMessage("timed_out", {"seconds": 300})
    assert msg.text == "Timed out after 300 s; the process tree was stopped"
    assert set(TEMPLATES) >= {"exit_code", "missed_caught_up", "cancel_requested"}


def test_it_shows_a_message_without_a_code_as_prefect_has_it(pt_br) -> None:
    prefect_says = "Flow run infrastructure exited with non-zero status code 1."
    assert run_message({"message": prefect_says}) == prefect_says
    # An English text alone is not translated: the code is what counts.
    assert run_message({"message": "Exit code 3"}) == "Exit code 3"
    assert run_message({"message": None}) == ""
    assert run_message(None) == ""


def test_it_reads_the_code_from_the_label_only_for_the_state_it_was_written_for() -> None:
    msg = RunMessage("exit_code", {"code": 3})
    labels = {**msg.label(), "other": "x"}
    assert RunMessage.from_labels(labels, "Exit code 3") == msg
    # A power user set the run's state again in Prefect: its new message has no code.
    assert RunMessage.from_labels(labels, "Rerun by hand") is None
    assert RunMessage.from_labels({}, "Exit code 3") is None
    assert RunMessage.from_labels({"scriptflow.message": "{not json"}, "Exit code 3") is None
    assert RunMessage.from_labels({"scriptflow.message": '{"code": "nope"}'}, "x") is None


def test_english_is_unchanged_and_labels_follow_the_language(pt_br) -> None:
    assert (status_label("timed_out"), trigger_label("retry")) == (
        "Tempo esgotado",
        "Nova tentativa",
    )
    token = i18n.set_locale("en")
    try:
        assert run_message(coded("exit_code", code=3)) == "Exit code 3"
        assert status_label(None) == "Never run"
    finally:
        i18n._current.reset(token)
