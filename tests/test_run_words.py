"""State messages the run_script flow writes (in English, in Prefect) are shown translated."""

from __future__ import annotations

import pytest

from scriptflow_prefect.execution.models import LauncherMissing
from scriptflow_prefect.platform import i18n
from scriptflow_prefect.runs.words import run_message, status_label, trigger_label


@pytest.fixture
def pt_br():
    token = i18n.set_locale("pt_BR")
    zone = i18n.set_zone("America/Sao_Paulo")
    yield
    i18n._zone.reset(zone)
    i18n._current.reset(token)


@pytest.mark.parametrize(
    ("english", "portuguese"),
    [
        ("Exit code 3", "Código de saída 3"),
        ("Exit code -9", "Código de saída -9"),
        (
            "Timed out after 300 s; the process tree was stopped",
            "Tempo esgotado após 300 s; a árvore de processos foi interrompida",
        ),
        (
            "Cancelled; the process tree was stopped",
            "Cancelada; a árvore de processos foi interrompida",
        ),
        ("Cancelled before it started", "Cancelada antes de começar"),
        (
            "Missed the time 2026-03-01T11:00+00:00 (ScriptFlow was not running); skipped as the "
            "script's policy says.",
            "Horário 01/03/2026 08:00 perdido (o ScriptFlow não estava em execução); ignorada "
            "conforme a política do script.",
        ),
        (
            "The previous run of this script was still running; skipped as the script's "
            "policy says.",
            "A execução anterior deste script ainda estava em andamento; ignorada conforme a "
            "política do script.",
        ),
        (
            str(LauncherMissing()),
            "Executar scripts .bat requer um executor Windows ou o wine nesta máquina",
        ),
    ],
)
def test_flow_messages_are_translated(pt_br, english, portuguese) -> None:
    assert run_message(english) == portuguese


def test_other_messages_are_shown_as_they_are(pt_br) -> None:
    assert (
        run_message("Flow run infrastructure exited with non-zero status code 1.")
        == "Flow run infrastructure exited with non-zero status code 1."
    )
    assert run_message(None) == ""
    assert run_message("Exit code 3 and more") == "Exit code 3 and more"


def test_english_is_unchanged_and_labels_follow_the_language(pt_br) -> None:
    assert (status_label("timed_out"), trigger_label("retry")) == (
        "Tempo esgotado",
        "Nova tentativa",
    )
    token = i18n.set_locale("en")
    try:
        assert run_message("Exit code 3") == "Exit code 3"
        assert status_label(None) == "Never run"
    finally:
        i18n._current.reset(token)
