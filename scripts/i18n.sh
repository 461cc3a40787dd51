#!/usr/bin/env bash
# Refresh the translation catalog after changing user-facing text: extract, merge into zh_CN, compile.
# Then translate the new empty msgstr entries in core/translations/zh_Hans_CN/LC_MESSAGES/messages.po and
# run this again (tests/web/test_i18n_catalog.py fails while any text is untranslated or not compiled).
set -euo pipefail
cd "$(dirname "$0")/.."
PYBABEL=${PYBABEL:-pybabel}
"$PYBABEL" extract -F babel.cfg -k _l -k N_ --no-location -o core/translations/messages.pot .
"$PYBABEL" update -i core/translations/messages.pot -d core/translations -l zh_Hans_CN --width 120 --ignore-obsolete --no-fuzzy-matching
"$PYBABEL" compile -d core/translations -l zh_Hans_CN
