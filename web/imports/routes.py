"""Import pages: choose what to import, download its template, upload for a dry run, confirm the import.

Lab managers import resources into their facilities; platform admins import resources, organisations and
users. The dry run writes nothing; the confirmed import re-checks the same (staged) file and writes all rows
in one transaction or none.
"""

from __future__ import annotations

import base64

from flask import Blueprint, Response, abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from flask_wtf import FlaskForm
from flask_wtf.file import FileField, FileRequired
from wtforms import HiddenField, SelectChoice, SelectField

from core.accounts.models import Role
from core.tabular import MAX_BYTES, MAX_ROWS, ImportRejected, InvalidFile, rows_csv
from web.authz import roles_required
from web.database import get_db
from web.i18n import field_errors
from web.imports import staging
from web.imports.kinds import FORMATS, KINDS, ImportKind, error_rows, kinds_for

bp = Blueprint("imports", __name__, url_prefix="/imports")

DESTINATIONS = {"resources": "manage.facilities", "organisations": "admin.organisations", "users": "admin.users"}


class UploadForm(FlaskForm):
    kind = SelectField(_l("What to import"))
    file = FileField(_l("File (.xlsx or .csv)"), validators=[FileRequired(_l("Choose a file."))])


class ConfirmForm(FlaskForm):
    kind = HiddenField()
    token = HiddenField()


def _kind_or_404(name: str) -> ImportKind:
    kind = KINDS.get(name)
    if kind is None:
        abort(404)
    if not kind.allowed(current_user):
        abort(403)
    return kind


def _upload_form() -> UploadForm:
    form = UploadForm()
    form.kind.choices = [SelectChoice(k.name, str(k.label)) for k in kinds_for(current_user)]
    if not form.is_submitted() and request.args.get("kind") in KINDS:
        form.kind.data = request.args["kind"]
    return form


def _index(form: UploadForm, status: int = 200):
    return render_template("imports/index.html", form=form, kinds=kinds_for(current_user), max_rows=MAX_ROWS,
                           max_mb=MAX_BYTES // (1024 * 1024)), status


@bp.get("")
@roles_required(Role.LAB_MANAGER, Role.ADMIN)
def index():
    return _index(_upload_form())


@bp.get("/templates/<kind>.<fmt>")
@roles_required(Role.LAB_MANAGER, Role.ADMIN)
def template(kind: str, fmt: str):
    import_kind = _kind_or_404(kind)
    if fmt not in FORMATS:
        abort(404)
    response = Response(import_kind.template(fmt), content_type=FORMATS[fmt])
    response.headers["Content-Disposition"] = f'attachment; filename="{import_kind.filename}-template.{fmt}"'
    return response


SHOWN_ERRORS = 500  # on the page; the CSV download has them all


def _data_url(csv_bytes: bytes) -> str:
    """A CSV the browser saves without the server keeping it (or anything in it) afterwards."""
    return "data:text/csv;charset=utf-8;base64," + base64.b64encode(csv_bytes).decode()


def _result_page(kind: ImportKind, result, filename: str, *, confirm: ConfirmForm | None = None, status: int = 200):
    errors = error_rows(result)
    download = _data_url(rows_csv([_("Row"), _("Column"), _("Problem")],
                                  [(e["row"], e["header"], e["message"]) for e in errors])) if errors else None
    return render_template("imports/result.html", kind=kind, result=result, filename=filename,
                           errors=errors[:SHOWN_ERRORS], error_count=len(errors), errors_csv=download,
                           confirm=confirm), status


@bp.post("/check")
@roles_required(Role.LAB_MANAGER, Role.ADMIN)
def check():
    form = _upload_form()
    if not form.validate_on_submit():
        return _index(form, 422)
    kind = _kind_or_404(form.kind.data)
    upload = form.file.data
    filename = upload.filename or ""
    data = upload.read(MAX_BYTES + 1)
    db = get_db()
    try:
        result = kind.run(db, current_user, data, filename, dry_run=True)
    except InvalidFile as exc:
        db.rollback()
        form.file.errors = [m for messages in field_errors(exc).values() for m in messages]
        return _index(form, 422)
    db.rollback()  # a dry run writes nothing; this makes sure of it
    if not result.ok:
        return _result_page(kind, result, filename, status=422)
    if result.rows == 0:
        form.file.errors = [_("The file has no data rows.")]
        return _index(form, 422)
    confirm = ConfirmForm(formdata=None, kind=kind.name,
                          token=staging.stage(current_user.id, kind.name, filename, data))
    return _result_page(kind, result, filename, confirm=confirm)


@bp.post("/confirm")
@roles_required(Role.LAB_MANAGER, Role.ADMIN)
def confirm():
    form = ConfirmForm()
    if not form.validate_on_submit():
        abort(400)
    kind = _kind_or_404(form.kind.data)
    staged = staging.load(form.token.data, current_user.id, kind.name)
    if staged is None:
        flash(_("The checked file has expired or was already imported. Upload it again."), "warning")
        return redirect(url_for(".index", kind=kind.name))
    filename, data = staged
    db = get_db()
    try:
        result = kind.run(db, current_user, data, filename, dry_run=False)
    except (ImportRejected, InvalidFile) as exc:
        db.rollback()
        staging.discard(form.token.data)
        if isinstance(exc, InvalidFile):
            flash(" ".join(m for messages in field_errors(exc).values() for m in messages), "danger")
            return redirect(url_for(".index", kind=kind.name))
        return _result_page(kind, exc.result, filename, status=422)  # the data changed since the dry run
    db.commit()
    staging.discard(form.token.data)
    if kind.name == "users":
        return _credentials_page(result)
    flash(_("%(n)s rows have been imported.", n=result.created), "success")
    return redirect(url_for(DESTINATIONS[kind.name]))


def _credentials_page(result):
    """The initial passwords, this once: not stored in clear anywhere, so this page cannot be shown again."""
    download = _data_url(rows_csv(["电子邮箱 / E-mail", "初始密码 / Initial password"], result.credentials))
    response = Response(render_template("imports/credentials.html", result=result, download=download))
    response.headers["Cache-Control"] = "no-store"
    return response
