"""Languages: zh-CN by default, English on request; the choice is remembered in a cookie and profile."""

from __future__ import annotations

from flask import Flask, current_app, request
from flask_babel import Babel, gettext
from flask_login import current_user

from core.errors import DomainError, translate_message

SUPPORTED_LOCALES = ("zh_CN", "en")
LANGUAGE_NAMES = {"zh_CN": "中文", "en": "English"}
LOCALE_COOKIE = "labshare_lang"


def select_locale() -> str:
    if current_user and current_user.is_authenticated:
        return current_user.locale
    cookie = request.cookies.get(LOCALE_COOKIE)
    if cookie in SUPPORTED_LOCALES:
        return cookie
    return current_app.config["BABEL_DEFAULT_LOCALE"]


def init_app(app: Flask) -> None:
    app.config.setdefault("BABEL_TRANSLATION_DIRECTORIES", "translations")
    Babel(app, locale_selector=select_locale)


def translate(message: str) -> str:
    return translate_message(message, gettext)


def error_text(error: DomainError) -> str:
    return error.render(gettext)


def field_errors(error) -> dict[str, list[str]]:
    return {field: [translate(m) for m in messages] for field, messages in getattr(error, "fields", {}).items()}


def violation_text(violation: dict) -> str:
    """One broken booking rule ({"code": …, params…}) in the user's language."""
    from booking.errors import RuleViolation

    params = {k: v for k, v in violation.items() if k not in ("code", "message")}
    english = RuleViolation.MESSAGES[violation["code"]]
    template = gettext(english)
    return template % params if params else template
