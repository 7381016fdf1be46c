"""Translations: a complete pt_BR catalogue, an up-to-date .pot and .mo, no hard-coded text in
the templates, and Portuguese (with Brazilian dates) when the locale is pt_BR.

When one of these fails after you added or changed a string: run `make i18n`
(scripts/i18n.sh), translate what is empty or fuzzy in
scriptflow_prefect/platform/locale/pt_BR/LC_MESSAGES/messages.po, and run `make i18n` again
to compile."""

from __future__ import annotations

import gettext
import html.parser
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from babel.messages.pofile import read_po
from jinja2 import Environment, nodes

ROOT = Path(__file__).resolve().parent.parent
LOCALE_DIR = ROOT / "scriptflow_prefect" / "platform" / "locale"
POT = LOCALE_DIR / "messages.pot"
TEMPLATES = ROOT / "ui_overlay" / "templates"
LOCALES = ("en", "pt_BR")
FIX = "run `make i18n`, translate, run `make i18n` again"

# The same extraction as scripts/i18n.sh (keep the two in step).
EXTRACT_ARGS = [
    "extract",
    "-F",
    "babel.cfg",
    "--no-default-keywords",
    "-k",
    "_",
    "-k",
    "gettext",
    "-k",
    "ngettext:1,2",
    "-k",
    "N_",
    "--add-comments=TRANSLATORS:",
    "--sort-output",
    "--ignore-dirs=.* ._ build dist node_modules *.egg-info tests bench",
]

# %(name)s style placeholders (any conversion) and literal %%.
PLACEHOLDER_RE = re.compile(r"%\((\w+)\)[#0 +-]*\d*(?:\.\d+)?[diouxXeEfFgGcrsa]|%%")


def _catalog(path: Path):
    with open(path, "rb") as fh:
        return read_po(fh)


def _key(message) -> str | tuple[str, ...]:
    return tuple(message.id) if isinstance(message.id, list | tuple) else message.id


def _ids(catalog) -> set:
    return {_key(m) for m in catalog if m.id}


def _po(locale: str) -> Path:
    return LOCALE_DIR / locale / "LC_MESSAGES" / "messages.po"


def _placeholders(text: str) -> list[str]:
    return sorted(
        m.group(0) if m.group(0) == "%%" else m.group(1) for m in PLACEHOLDER_RE.finditer(text)
    )


def _show(key) -> str:
    return " | ".join(key) if isinstance(key, tuple) else key


# -- (a) the pt_BR catalogue is complete and sound --------------------------------------------
def test_pt_br_has_plural_forms_for_brazilian_portuguese():
    catalog = _catalog(_po("pt_BR"))
    assert catalog.plural_forms == "nplurals=2; plural=(n > 1);"


def test_every_msgid_has_a_pt_br_translation_with_the_same_placeholders():
    catalog = _catalog(_po("pt_BR"))
    problems = []
    for m in catalog:
        if not m.id:
            continue
        key = _key(m)
        if m.fuzzy:
            problems.append(f"fuzzy (check it, then remove the flag): {_show(key)}")
        if isinstance(key, tuple):
            forms = list(m.string) if isinstance(m.string, list | tuple) else [m.string]
            if len(forms) != catalog.num_plurals:
                problems.append(f"needs {catalog.num_plurals} plural forms: {_show(key)}")
            # pt_BR: form 0 is for 0 and 1 (the msgid's singular), form 1 for 2 and more.
            pairs = [(key[0] if i == 0 else key[1], form) for i, form in enumerate(forms)]
        else:
            pairs = [(key, m.string)]
        for source, translation in pairs:
            if not translation or not translation.strip():
                problems.append(f"untranslated: {_show(key)}")
            elif _placeholders(source) != _placeholders(translation):
                problems.append(f"placeholders differ: {source!r} -> {translation!r}")
    assert not problems, f"{FIX}:\n" + "\n".join(problems)


def test_the_en_catalogue_is_complete():
    """msgids are English: an empty msgstr (or the msgid itself) is the translation."""
    catalog = _catalog(_po("en"))
    problems = []
    for m in catalog:
        if not m.id:
            continue
        if m.fuzzy:
            problems.append(f"fuzzy: {_show(_key(m))}")
        ids = list(m.id) if isinstance(m.id, list | tuple) else [m.id]
        strings = list(m.string) if isinstance(m.string, list | tuple) else [m.string]
        if any(s and s not in ids for s in strings):
            problems.append(f"en msgstr differs from its msgid: {_show(_key(m))}")
    assert not problems, "\n".join(problems)


# -- (b) the .pot, .po and .mo files are up to date --------------------------------------------
def test_the_pot_file_holds_every_string_of_the_code_and_templates(tmp_path):
    fresh = tmp_path / "messages.pot"
    result = subprocess.run(
        [sys.executable, "-m", "babel.messages.frontend", *EXTRACT_ARGS, "-o", str(fresh), "."],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    extracted, committed = _ids(_catalog(fresh)), _ids(_catalog(POT))
    added = sorted(map(_show, extracted - committed))
    gone = sorted(map(_show, committed - extracted))
    assert not added and not gone, (
        f"scriptflow_prefect/platform/locale/messages.pot is stale ({FIX}).\n"
        f"New strings: {added}\nStrings no longer used: {gone}"
    )


@pytest.mark.parametrize("locale", LOCALES)
def test_each_catalogue_has_exactly_the_strings_of_the_pot(locale):
    pot, po = _ids(_catalog(POT)), _ids(_catalog(_po(locale)))
    assert pot == po, (
        f"{locale} messages.po is not merged with the .pot ({FIX}).\n"
        f"Missing: {sorted(map(_show, pot - po))}\nExtra: {sorted(map(_show, po - pot))}"
    )


def test_the_pt_br_mo_file_is_compiled_from_the_po_file():
    mo = LOCALE_DIR / "pt_BR" / "LC_MESSAGES" / "messages.mo"
    with open(mo, "rb") as fh:
        compiled = gettext.GNUTranslations(fh)
    stale = []
    for m in _catalog(_po("pt_BR")):
        strings = list(m.string) if isinstance(m.string, list | tuple) else [m.string]
        if not m.id or m.fuzzy or not all(strings):  # not compiled: shown in English
            continue
        key = _key(m)
        if isinstance(key, tuple):
            got = (compiled.ngettext(key[0], key[1], 1), compiled.ngettext(key[0], key[1], 2))
            want = tuple(m.string)
        else:
            got, want = compiled.gettext(key), m.string
        if got != want:
            stale.append(_show(key))
    assert not stale, f"messages.mo is older than messages.po ({FIX}): {stale}"


# -- (c) no hard-coded user-visible text in the templates --------------------------------------
# Proper names and units that read the same in every language. Keep it short.
ALLOWED_TEXT = (
    "ScriptFlow",
    "SHA-256",
    "Python (.py)",
    "B",
    "…",
    "English",
    "Português (Brasil)",
)
VISIBLE_ATTRIBUTES = {
    "aria-label",
    "aria-description",
    "aria-placeholder",
    "aria-roledescription",
    "aria-valuetext",
    "title",
    "placeholder",
    "alt",
}
EXPR, BLOCK = "\ue000", "\ue001"  # stand-ins for {{ }} and {% %} / {# #} (not letters)
_ALLOWED_RE = re.compile(
    "|".join(
        rf"(?<!\w){re.escape(word)}(?!\w)" for word in sorted(ALLOWED_TEXT, key=len, reverse=True)
    )
)
_lint_env = Environment(extensions=["jinja2.ext.i18n"])


def _has_words(text: str) -> bool:
    return any(c.isalpha() for c in _ALLOWED_RE.sub("", text))


def _literal_output(expr: nodes.Node | None) -> list[str]:
    """String constants that an expression prints as they are (not through gettext)."""
    if isinstance(expr, nodes.Const) and isinstance(expr.value, str):
        return [expr.value]
    if isinstance(expr, nodes.CondExpr):
        return _literal_output(expr.expr1) + _literal_output(expr.expr2)
    if isinstance(expr, nodes.Or | nodes.And):
        return _literal_output(expr.left) + _literal_output(expr.right)
    if isinstance(expr, nodes.Concat):
        return [s for n in expr.nodes for s in _literal_output(n)]
    return []


def _skeleton(source: str) -> str:
    """The template as HTML: {{ }} and {% %} become stand-ins (a printed literal such as
    {{ "Never" }} stays as its text), {% trans %} bodies count as translated."""
    out: list[str] = []
    construct: list[tuple[str, str]] = []
    in_trans = False
    for _line, kind, value in _lint_env.lex(source):
        if kind == "data" and not construct:
            out.append(BLOCK + "\n" * value.count("\n") if in_trans else value)
            continue
        construct.append((kind, value))
        if kind not in ("variable_end", "block_end", "comment_end"):
            continue
        text = "".join(v for _k, v in construct)
        keep_lines = "\n" * text.count("\n")
        if kind == "variable_end":
            expr_src = "".join(v for k, v in construct[1:-1])
            body = _lint_env.parse("{{" + expr_src + "}}").body[0]
            words = [s for n in body.nodes for s in _literal_output(n) if _has_words(s)]
            out.append((" ".join(words) if words else EXPR) + keep_lines)
        else:
            names = [v for k, v in construct if k == "name"]
            if names and names[0] in ("trans", "pluralize"):
                in_trans = True
            elif names and names[0] == "endtrans":
                in_trans = False
            out.append(f" {BLOCK} " + keep_lines)
        construct = []
    return "".join(out)


class _TextFinder(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[tuple[int, str]] = []
        self._raw = 0  # inside <script> or <style>

    def _check(self, text: str, where: str = "") -> None:
        for piece in re.split(f"[{EXPR}{BLOCK}]", text):
            if _has_words(piece):
                self.found.append((self.getpos()[0], f"{where}{piece.strip()!r}"))

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style"):
            self._raw += 1
        attributes = dict(attrs)
        for name, value in attrs:
            visible = name in VISIBLE_ATTRIBUTES or (
                name == "value"
                and tag == "input"
                and (attributes.get("type") or "").lower() in ("submit", "button", "reset")
            )
            if visible and value:
                self._check(value, f"<{tag} {name}=> ")

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if tag in ("script", "style"):
            self._raw -= 1

    def handle_endtag(self, tag):
        if tag in ("script", "style") and self._raw:
            self._raw -= 1

    def handle_data(self, data):
        if not self._raw:
            self._check(data)


def untranslated_text(source: str) -> list[tuple[int, str]]:
    finder = _TextFinder()
    finder.feed(_skeleton(source))
    finder.close()
    return finder.found


def test_the_template_lint_finds_hard_coded_text():
    bad = (
        '<p>Hello {{ name }}</p>\n<a title="Open it" aria-label="{{ _(\'Fine\') }}">x</a>\n'
        '<td>{{ _("Yes") if ok else "Never" }}</td><input type="submit" value="Go">\n'
        '<img alt="Logo {{ n }}">'
    )
    found = untranslated_text(bad)
    assert [line for line, _t in found] == [1, 2, 2, 3, 3, 4], found
    good = (
        '<p>{{ _("Hello %(n)s", n=name) }}</p><a title="{{ _(\'Open\') }}" href="/x">'
        "{% if a %}ScriptFlow {{ v }}{% endif %}</a><td>{{ size }} B</td>"
        "<html lang=\"{{ 'pt-BR' if x else 'en' }}\"><script>let a = \"text\";</script>"
        "{% trans %}Hello{% endtrans %}{# a comment #}<td>{{ x or '?' }} · 12:00</td>"
    )
    assert untranslated_text(good) == []


TEMPLATE_FILES = sorted(TEMPLATES.rglob("*.html"))


@pytest.mark.parametrize(
    "template", TEMPLATE_FILES, ids=[str(p.relative_to(TEMPLATES)) for p in TEMPLATE_FILES]
)
def test_templates_show_no_text_outside_gettext(template):
    found = untranslated_text(template.read_text(encoding="utf-8"))
    assert not found, (
        f'{template.relative_to(ROOT)}: wrap user-visible text in {{{{ _("...") }}}}:\n'
        + "\n".join(f"  line {line}: {text}" for line, text in found)
    )


# -- (d) what a Brazilian user sees ----------------------------------------------------------
@pytest.fixture
def pt_br():
    from scriptflow_prefect.platform import i18n

    token = i18n.set_locale("pt_BR")
    yield i18n
    i18n._current.reset(token)


def test_python_strings_come_out_in_portuguese(pt_br):
    from scriptflow_prefect.ui_overlay.templating import status_label, trigger_label

    assert pt_br._("Run now") == "Executar agora"
    assert [
        status_label(s)
        for s in ("queued", "running", "succeeded", "failed", "timed_out", "cancelled", "crashed")
    ] == [
        "Na fila",
        "Em execução",
        "Concluído com sucesso",
        "Falhou",
        "Tempo esgotado",
        "Cancelado",
        "Interrompido",
    ]
    assert trigger_label("manual") == "Manual"
    assert pt_br._("Signed in as %(name)s", name="ana") == "Conectado como ana"
    assert [pt_br.ngettext("%(num)s run", "%(num)s runs", n) for n in (0, 1, 2)] == [
        "0 execução",
        "1 execução",
        "2 execuções",
    ]
    assert pt_br.format_duration(1.5) == "1,5 s"


def test_templates_render_in_portuguese(pt_br):
    from scriptflow_prefect.ui_overlay.templating import env

    snippet = env.from_string(
        '{{ _("Run now") }} | {{ ngettext("%(num)s script", "%(num)s scripts", 3) }}'
        ' | {{ _("Page %(page)s of %(pages)s", page=1, pages=2) }}'
    )
    assert snippet.render() == "Executar agora | 3 scripts | Página 1 de 2"
    page = env.get_template("auth/login.html").render(
        request=None, user=None, csrf_token="t", locale="pt_BR", flash=[], next="/", error=None
    )
    assert 'lang="pt-BR"' in page
    assert "Entrar no ScriptFlow" in page and "Nome de usuário" in page


def test_dates_are_day_month_year_with_a_24_hour_clock_in_pt_br(pt_br):
    at = datetime(2026, 3, 5, 14, 7, tzinfo=UTC)
    assert pt_br.format_datetime(at, tz="UTC") == "05/03/2026 14:07"
    assert pt_br.format_datetime(at, tz="America/Sao_Paulo") == "05/03/2026 11:07"
    assert pt_br.format_time(at, tz="UTC") == "14:07"
