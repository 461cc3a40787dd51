"""Error pages and the API error format, in one place for every blueprint.

API errors: `{"error": {"code": "...", "message": "...", "details": {...}}}` (design.md §8).
"""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify, render_template, request
from flask_babel import gettext as _
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException

from booking.errors import RuleViolation
from core import errors as domain
from web.i18n import error_text, field_errors, violation_text

log = logging.getLogger(__name__)

STATUS_BY_ERROR: list[tuple[type[domain.DomainError], int]] = [
    (domain.NotFound, 404),
    (domain.Forbidden, 403),
    (domain.AccountDisabled, 403),
    (domain.InvalidCredentials, 401),
    (domain.Unauthenticated, 401),
    (domain.InvalidToken, 401),
    (domain.InvalidInput, 422),
    (RuleViolation, 422),
    (domain.Conflict, 409),
]

HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
              405: "method_not_allowed", 409: "conflict", 413: "payload_too_large", 422: "invalid_input",
              429: "too_many_requests", 500: "internal_error"}


def status_for(error: domain.DomainError) -> int:
    for cls, status in STATUS_BY_ERROR:
        if isinstance(error, cls):
            return status
    return 400


def http_messages() -> dict[int, str]:
    return {
        400: _("The request could not be understood."),
        401: _("Please sign in first."),
        403: _("You do not have permission to see this page."),
        404: _("This page does not exist."),
        405: _("This method is not allowed here."),
        413: _("The upload is too large."),
        500: _("Something went wrong on our side. The problem has been logged."),
    }


def _translated(problems):
    """marshmallow's messages (strings, or nested dicts/lists of them) through the catalog."""
    if isinstance(problems, str):
        return _(problems)
    if isinstance(problems, list):
        return [_translated(p) for p in problems]
    if isinstance(problems, dict):
        return {key: _translated(value) for key, value in problems.items()}
    return problems


def wants_json() -> bool:
    return request.path.startswith("/api/") or request.path == "/healthz"


def api_error(status: int, code: str, message: str, details: dict | None = None) -> Response:
    response = jsonify({"error": {"code": code, "message": message, "details": details or {}}})
    response.status_code = status
    return response


def error_page(status: int, message: str) -> tuple[str, int]:
    return render_template("errors/error.html", status=status, message=message), status


def init_app(app: Flask) -> None:
    @app.errorhandler(domain.DomainError)
    def _domain_error(error: domain.DomainError):
        status = status_for(error)
        details = dict(error.details)
        if isinstance(error, domain.InvalidInput):
            details["fields"] = field_errors(error)
        if isinstance(error, RuleViolation):
            details["violations"] = [{**v, "message": violation_text(v)} for v in details.get("violations", [])]
        if wants_json():
            return api_error(status, error.code, error_text(error), details)
        return error_page(status, error_text(error))

    @app.errorhandler(CSRFError)
    def _csrf_error(error: CSRFError):
        message = _("The form has expired or did not come from this site. Reload the page and try again.")
        if wants_json():
            return api_error(400, "csrf_failed", message)
        return error_page(400, message)

    @app.errorhandler(HTTPException)
    def _http_error(error: HTTPException):
        status = error.code or 500
        message = http_messages().get(status, error.description or "")
        if wants_json():
            details = {}
            messages = (getattr(error, "data", None) or {}).get("messages")
            if messages:  # webargs puts validation errors here, by location (json, query, …)
                # per field, or a list for the location as a whole (a body that is not JSON at all)
                details["fields"] = {field: _translated(problems) for name, location in messages.items()
                                     for field, problems in (location.items() if isinstance(location, dict)
                                                             else [(name, location)])}
                message = domain.InvalidInput.message if status == 422 else message
                message = _(message)
            return api_error(status, HTTP_CODES.get(status, "http_error"), message, details)
        return error_page(status, message)

    @app.errorhandler(Exception)
    def _unexpected(error: Exception):
        log.exception("unhandled error on %s %s", request.method, request.path)
        message = http_messages()[500]
        if wants_json():
            return api_error(500, "internal_error", message)
        return error_page(500, message)
