"""Resource photos: upload and delete (the facility's lab managers), and serving them."""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, abort, current_app, flash, redirect, request, send_file, url_for
from flask_babel import gettext as _
from flask_login import current_user, login_required

from booking import photos
from booking.models import ResourcePhoto
from core.errors import DomainError
from web.database import get_db
from web.forms import safe_next
from web.i18n import error_text, field_errors

bp = Blueprint("photos", __name__)


def photo_dir() -> Path:
    return Path(current_app.config["LABSHARE_SETTINGS"].data_dir).resolve() / "photos"


@bp.get("/photos/<int:photo_id>")
@login_required
def show(photo_id: int):
    photo = get_db().get(ResourcePhoto, photo_id)
    if photo is None:
        abort(404)
    path = photos.photo_path(photo_dir(), photo)
    if not path.is_file():
        abort(404)
    return send_file(path, mimetype=photo.content_type, max_age=86400)


def _back(resource_id: int):
    return redirect(safe_next(request.form.get("next"), url_for("manage.facilities")))


@bp.post("/manage/resources/<int:resource_id>/photos")
@login_required
def upload(resource_id: int):
    db = get_db()
    upload = request.files.get("photo")
    data = upload.read(photos.MAX_PHOTO_BYTES + 1) if upload else b""
    try:
        photos.add_photo(db, current_user, resource_id, data, photo_dir(), request.form.get("caption", ""))
    except DomainError as exc:
        db.rollback()
        fields = field_errors(exc)
        flash(" ".join(m for messages in fields.values() for m in messages) or error_text(exc), "danger")
        return _back(resource_id)
    db.commit()
    flash(_("The photo has been added."), "success")
    return _back(resource_id)


@bp.post("/photos/<int:photo_id>/delete")
@login_required
def delete(photo_id: int):
    db = get_db()
    photo = db.get(ResourcePhoto, photo_id)
    resource_id = photo.resource_id if photo else 0
    try:
        filename = photos.delete_photo(db, current_user, photo_id)
    except DomainError as exc:
        db.rollback()
        flash(error_text(exc), "danger")
        return _back(resource_id)
    db.commit()
    (photo_dir() / filename).unlink(missing_ok=True)
    flash(_("The photo has been deleted."), "success")
    return _back(resource_id)
