"""API: bulk imports from the XLSX/CSV templates (POST a file; `dry_run=true` checks without writing).

Problems come back as 422 in the API error format with one entry per problem in `details.rows`:
`{"row": 7, "column": "original_value", "header": "原值（元）", "message": "…"}` (row as Excel numbers it).
"""

from __future__ import annotations

from flask.views import MethodView
from flask_smorest.fields import Upload
from marshmallow import Schema, fields

from core.tabular import MAX_BYTES, ImportRejected, ImportResult
from web.api.auth import current_api_user
from web.api.blueprint import blp
from web.api.schemas import InputSchema
from web.database import get_db
from web.errors import api_error
from web.i18n import error_text
from web.imports.kinds import KINDS, error_rows


class ImportQuery(InputSchema):
    dry_run = fields.Boolean(load_default=False, metadata={
        "description": "Check every row and report problems; write nothing."})


class ImportFile(Schema):
    file = Upload(required=True, metadata={"description": ".xlsx or .csv (UTF-8, UTF-8 with BOM, or GBK) "
                                                          "with the template's header row"})


class CredentialSchema(Schema):
    email = fields.String()
    password = fields.String(metadata={"description": "initial password, shown only in this response"})


class ImportReportSchema(Schema):
    kind = fields.String()
    dry_run = fields.Boolean()
    rows = fields.Integer(metadata={"description": "data rows in the file (blank rows are not counted)"})
    created = fields.Integer(metadata={"description": "rows written (0 for a dry run)"})
    credentials = fields.List(fields.Nested(CredentialSchema), metadata={
        "description": "users only: each new user's initial password (stored only as a hash)"})


def _report(result: ImportResult) -> dict:
    return {"kind": result.kind, "dry_run": result.dry_run, "rows": result.rows, "created": result.created,
            "credentials": [{"email": e, "password": p} for e, p in result.credentials]}


def _rejected(result: ImportResult, message: str):
    return api_error(422, "import_rejected", message, {"rows": error_rows(result), "fields": {}})


SUMMARIES = {
    "resources": "Import instruments and pilot lines (lab managers: into their facilities; admins: any)",
    "organisations": "Import organisations (admins)",
    "users": "Import users with random initial passwords, returned in this response only (admins)",
}


def _import(kind: str, query: dict, files: dict):
    db = get_db()
    data = files["file"].read(MAX_BYTES + 1)
    filename = files["file"].filename or ""
    try:
        result = KINDS[kind].run(db, current_api_user(), data, filename, dry_run=query["dry_run"])
    except ImportRejected as exc:
        db.rollback()
        return _rejected(exc.result, error_text(exc))
    if result.dry_run:
        db.rollback()
        if not result.ok:
            return _rejected(result, error_text(ImportRejected(result)))
        return _report(result)
    db.commit()
    return _report(result)


def _route(kind: str) -> None:
    """One documented path per kind (/imports/resources, …): a fixed path per operation, like the rest of the API."""

    class ImportView(MethodView):
        @blp.arguments(ImportQuery, location="query")
        @blp.arguments(ImportFile, location="files")
        @blp.response(200, ImportReportSchema)
        @blp.alt_response(422, description="Problems in the file (nothing written): `details.rows` lists each "
                                           "problem as {row, column, header, message}; `row` as Excel numbers it")
        @blp.doc(summary=SUMMARIES[kind], description=(
            "Multipart upload of an .xlsx or .csv file with the template's header row. All rows are written in "
            "one transaction, or none. With `dry_run=true`, only check: 200 when every row is valid."))
        def post(self, query, files):
            return _import(kind, query, files)

    ImportView.__name__ = f"Import{kind.capitalize()}"
    blp.route(f"/imports/{kind}", endpoint=f"import_{kind}")(ImportView)


for _kind in SUMMARIES:
    _route(_kind)
