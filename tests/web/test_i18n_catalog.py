"""The zh-CN catalog: every text in the source is translated, placeholders agree, and the .mo is compiled.

Extraction is done exactly as scripts/i18n.sh does it (`pybabel extract -F babel.cfg -k _l -k N_`), so a
failure here is fixed by running that script and translating the new entries.
"""

from __future__ import annotations

import re
from collections import defaultdict
from io import BytesIO
from pathlib import Path

import pytest
from babel.messages.catalog import PYTHON_FORMAT
from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

ROOT = Path(__file__).parents[2]
CATALOG_DIR = ROOT / "core" / "translations" / "zh_Hans_CN" / "LC_MESSAGES"
PO_FILE = CATALOG_DIR / "messages.po"
MO_FILE = CATALOG_DIR / "messages.mo"
KEYWORDS = {**DEFAULT_KEYWORDS, "_l": None, "N_": None}


@pytest.fixture(scope="module")
def extracted() -> dict[str, set[str]]:
    """msgid -> the files it appears in (plural messages by their singular)."""
    with (ROOT / "babel.cfg").open(encoding="utf-8") as fh:
        method_map, options_map = parse_mapping_cfg(fh, filename="babel.cfg")
    found: dict[str, set[str]] = defaultdict(set)
    for filename, _lineno, message, _comments, _context in extract_from_dir(
            ROOT, method_map, options_map, keywords=KEYWORDS):
        msgid = message[0] if isinstance(message, tuple) else message
        if msgid:
            found[msgid].add(filename)
    return dict(found)


@pytest.fixture(scope="module")
def catalog():
    with PO_FILE.open("rb") as fh:
        return read_po(fh)


def _singular(msgid: str | tuple[str, ...]) -> str:
    return msgid[0] if isinstance(msgid, tuple) else msgid


def translations(message) -> tuple[str, ...]:
    """The msgstr, or each plural form's."""
    return message.string if isinstance(message.string, tuple) else (message.string,)


def placeholders(text: str) -> list[str]:
    return sorted(match.group(0) for match in PYTHON_FORMAT.finditer(text))


def test_extraction_sees_every_kind_of_source(extracted):
    files = set().union(*extracted.values())
    assert any(f.startswith("core/") for f in files)  # N_ in domain errors
    assert any(f.startswith("web/") and f.endswith(".py") for f in files)  # _ and _l in routes
    assert any(f.startswith("web/templates/") for f in files)  # {{ _("...") }} in templates
    assert "The e-mail address or the password is wrong." in extracted  # core, N_
    assert "Sign in" in extracted  # templates and web
    assert len(extracted) > 150


def test_every_extracted_message_has_a_chinese_translation(extracted, catalog):
    missing = sorted(msgid for msgid in extracted if msgid not in catalog)
    empty = sorted(msgid for msgid in extracted if msgid in catalog and not all(translations(catalog[msgid])))
    assert missing == [], "not in messages.po (run scripts/i18n.sh): " + "; ".join(
        f"{m!r} ({', '.join(sorted(extracted[m]))})" for m in missing)
    assert empty == [], f"untranslated: {empty}"


def test_translations_are_chinese(extracted, catalog):
    """A translation identical to its English text is most likely a forgotten copy."""
    english_only = sorted(msgid for msgid in extracted if msgid in catalog and catalog[msgid].string == msgid
                          and re.search(r"[A-Za-z]{3}", msgid) and not re.search(r"[\u4e00-\u9fff]", msgid))
    assert english_only == []


def test_no_entry_is_fuzzy_or_obsolete(catalog):
    fuzzy = sorted(message.id for message in catalog if message.id and message.fuzzy)
    assert fuzzy == []
    assert not catalog.fuzzy  # the header
    assert list(catalog.obsolete) == []


def test_the_catalog_holds_no_text_the_source_no_longer_has(extracted, catalog):
    stale = sorted(message.id for message in catalog if message.id and _singular(message.id) not in extracted)
    assert stale == [], "run scripts/i18n.sh to drop them"


def test_python_format_placeholders_match(catalog):
    mismatched = []
    for message in catalog:
        if not message.id:
            continue
        ids = message.id if isinstance(message.id, tuple) else (message.id,)
        expected = placeholders(ids[0])
        if expected and "python-format" not in message.flags:
            mismatched.append((message.id, "not flagged python-format"))
        for string in translations(message):
            if placeholders(string) != expected:
                mismatched.append((message.id, string))
    assert mismatched == []


def test_the_babel_checkers_find_no_problem(catalog):
    problems = [(message.id, [str(error) for error in errors]) for message, errors in catalog.check()]
    assert problems == []


def test_the_committed_mo_is_the_compiled_po(catalog):
    compiled = BytesIO()
    write_mo(compiled, catalog)

    assert MO_FILE.read_bytes() == compiled.getvalue(), "run scripts/i18n.sh (pybabel compile)"
