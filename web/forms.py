"""Helpers shared by the HTML forms."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask_wtf import FlaskForm

from core.errors import InvalidInput
from web.i18n import translate


def apply_field_errors(form: FlaskForm, error: InvalidInput) -> None:
    """Show a service's validation errors next to the fields they belong to."""
    for name, messages in error.fields.items():
        field = getattr(form, name, None)
        target = field.errors if field is not None else form.form_errors
        if isinstance(target, tuple):
            target = field.errors = list(target)
        target.extend(translate(m) for m in messages)


def safe_next(target: str | None, default: str) -> str:
    """Only same-site paths: an open redirect after sign-in is a phishing tool."""
    if not target:
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return default
    return target
