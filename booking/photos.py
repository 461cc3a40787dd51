"""Resource photos: checked by their bytes (not their names), stored under random names, size-limited."""

from __future__ import annotations

import secrets
from pathlib import Path

from sqlalchemy.orm import Session

from booking.models import Resource, ResourcePhoto
from booking.permissions import can_manage_facility
from core import audit
from core.accounts.models import User
from core.errors import N_, Forbidden, InvalidInput, NotFound

MAX_PHOTO_BYTES = 5 * 1024 * 1024
MAX_PHOTOS_PER_RESOURCE = 12
# Magic numbers of the formats browsers show; anything else (SVG with scripts, HTML, …) is refused.
SIGNATURES = ((b"\x89PNG\r\n\x1a\n", "image/png", "png"), (b"\xff\xd8\xff", "image/jpeg", "jpg"))


def _sniff(data: bytes) -> tuple[str, str] | None:
    for magic, content_type, extension in SIGNATURES:
        if data.startswith(magic):
            return content_type, extension
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp", "webp"
    return None


def add_photo(db: Session, actor: User, resource_id: int, data: bytes, photo_dir: Path,
              caption: str = "") -> ResourcePhoto:
    resource = db.get(Resource, resource_id)
    if resource is None:
        raise NotFound("resource", resource_id)
    if not can_manage_facility(db, actor, resource.facility_id):
        raise Forbidden()
    if len(resource.photos) >= MAX_PHOTOS_PER_RESOURCE:
        raise InvalidInput({"photo": [N_("A resource can have at most 12 photos.")]})
    if not data or len(data) > MAX_PHOTO_BYTES:
        raise InvalidInput({"photo": [N_("Choose an image of at most 5 MB.")]})
    kind = _sniff(data)
    if kind is None:
        raise InvalidInput({"photo": [N_("Only PNG, JPEG and WebP images are accepted.")]})
    if len(caption) > 200:
        raise InvalidInput({"caption": [N_("At most 200 characters.")]})
    content_type, extension = kind
    filename = f"{secrets.token_hex(16)}.{extension}"
    photo = ResourcePhoto(resource_id=resource.id, filename=filename, content_type=content_type,
                          size_bytes=len(data), caption=caption.strip(), uploaded_by_id=actor.id)
    db.add(photo)
    db.flush()
    photo_dir.mkdir(parents=True, exist_ok=True)
    # written before the commit: a failed commit leaves an orphan file, never a row without its file
    (photo_dir / filename).write_bytes(data)
    audit.record(db, actor, "resource.photo_added", photo, resource_id=resource.id)
    return photo


def delete_photo(db: Session, actor: User, photo_id: int) -> str:
    """Delete the row; returns the file name, for the caller to remove once the deletion is committed."""
    photo = db.get(ResourcePhoto, photo_id)
    if photo is None:
        raise NotFound("photo", photo_id)
    resource = db.get(Resource, photo.resource_id)
    if not can_manage_facility(db, actor, resource.facility_id):
        raise Forbidden()
    audit.record(db, actor, "resource.photo_deleted", photo, resource_id=resource.id)
    db.delete(photo)
    db.flush()
    return photo.filename


def photo_path(photo_dir: Path, photo: ResourcePhoto) -> Path:
    return photo_dir / photo.filename
