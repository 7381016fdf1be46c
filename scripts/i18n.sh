#!/usr/bin/env bash
# Translations: extract every marked string into scriptflow_prefect/platform/locale/messages.pot, merge it
# into the en and pt_BR catalogues, and compile the .mo files the package ships.
#
#   make i18n                 (or: bash scripts/i18n.sh)
#
# Then translate the new or fuzzy entries in scriptflow_prefect/platform/locale/pt_BR/LC_MESSAGES/messages.po
# (remove the "fuzzy" flag once checked), run this again to compile, and run
# `pytest tests/test_i18n.py`: it fails while a string is untranslated or the .pot is stale.
set -euo pipefail
cd "$(dirname "$0")/.."

PYBABEL="${PYBABEL:-pybabel}"
command -v "$PYBABEL" >/dev/null 2>&1 || PYBABEL="python3 -m babel.messages.frontend"

LOCALE_DIR=scriptflow_prefect/platform/locale
POT="$LOCALE_DIR/messages.pot"
LOCALES=(en pt_BR)

# The same options as tests/test_i18n.py uses to check that the .pot is up to date.
$PYBABEL extract -F babel.cfg \
  --no-default-keywords -k _ -k gettext -k ngettext:1,2 -k N_ \
  --add-comments=TRANSLATORS: --sort-output \
  --ignore-dirs='.* ._ build dist node_modules *.egg-info tests bench' \
  --project=ScriptFlow --copyright-holder=ScriptFlow \
  -o "$POT" .

for locale in "${LOCALES[@]}"; do
  po="$LOCALE_DIR/$locale/LC_MESSAGES/messages.po"
  if [ ! -f "$po" ]; then
    $PYBABEL init -D messages -i "$POT" -d "$LOCALE_DIR" -l "$locale"
  fi
  if [ "$locale" = en ]; then
    # msgids are English: the en catalogue stays empty, no fuzzy guesses wanted.
    $PYBABEL update -D messages -i "$POT" -d "$LOCALE_DIR" -l "$locale" \
      --ignore-obsolete --no-fuzzy-matching
  else
    $PYBABEL update -D messages -i "$POT" -d "$LOCALE_DIR" -l "$locale" \
      --ignore-obsolete --previous
  fi
done

$PYBABEL compile -D messages -d "$LOCALE_DIR" --statistics

# pt_BR is Brazilian Portuguese: one form for 0 and 1, another from 2 on.
grep -q '^"Plural-Forms: nplurals=2; plural=(n > 1);\\n"$' \
  "$LOCALE_DIR/pt_BR/LC_MESSAGES/messages.po" \
  || echo "i18n: fix the Plural-Forms header of pt_BR (nplurals=2; plural=(n > 1);)" >&2

echo "i18n: now translate what is empty or fuzzy in $LOCALE_DIR/pt_BR/LC_MESSAGES/messages.po," \
  "run this again, then pytest tests/test_i18n.py"
