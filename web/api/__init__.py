"""The REST API under /api/v1: bearer-token auth, the error format of design.md §8, an OpenAPI document."""

from __future__ import annotations

from flask import Flask
from flask_smorest import Api
from werkzeug.routing import IntegerConverter

from web.api.blueprint import blp
from web.api.schemas import MAX_ID


class IdConverter(IntegerConverter):
    """`<id:name>` in API paths: a row id from 1 to MAX_ID. A larger number cannot name a row (SQLite cannot even
    compare it with one), so the path does not match: a 404 like any unknown id."""

    def __init__(self, url_map, *args, **kwargs):
        super().__init__(url_map, min=1, max=MAX_ID)


class LabShareApi(Api):
    def _register_error_handlers(self) -> None:
        """The app's own handlers (web.errors) produce the project-wide error format for API paths."""


def init_api(app: Flask) -> Api:
    from web.api import (  # noqa: F401 -- they add their routes and hooks to blp
        accounts,
        auth,
        billing,
        booking,
        devices,
        imports,
        reports,
        telemetry,
        vouchers,
    )
    from web.app import csrf

    api = LabShareApi(app, spec_kwargs={"info": {"description": (
        "LabShare REST API. Authenticate with `Authorization: Bearer <token>` (create tokens on your "
        "account page or with `labshare tokens create`). Errors are "
        "`{\"error\": {\"code\", \"message\", \"details\"}}`; collections take `page` and `per_page` "
        "and return `total`.")}})
    api.spec.components.security_scheme("bearerAuth", {"type": "http", "scheme": "bearer"})
    api.spec.options["security"] = [{"bearerAuth": []}]
    app.url_map.converters["id"] = IdConverter  # documented as integer 1..MAX_ID (a subclass of int's converter)
    csrf.exempt(blp)  # no cookies are honoured here, so cross-site requests cannot ride on a session
    api.register_blueprint(blp)
    return api
