"""Translations outside a web request (e-mails, the CLI): the same catalog the pages use."""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

from babel import Locale
from babel.support import Translations

TRANSLATIONS_DIR = Path(__file__).parent / "translations"
SUPPORTED_LOCALES = ("zh_CN", "en")


@lru_cache(maxsize=8)
def translations(locale: str) -> Translations:
    # Babel spells zh_CN as zh_Hans_CN, which is also the catalog's folder name
    return Translations.load(str(TRANSLATIONS_DIR), [Locale.parse(locale)])


def gettext_for(locale: str) -> Callable[[str], str]:
    return translations(locale if locale in SUPPORTED_LOCALES else "zh_CN").gettext
