"""Registering devices, rotating their credentials, and exporting Mosquitto's password and ACL files."""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from booking.models import Resource
from booking.permissions import can_manage_facility
from core import audit
from core.accounts.models import User
from core.errors import N_, Forbidden, InvalidInput, NotFound
from devices.credentials import mosquitto_hash, new_secret
from devices.models import Device, UsageSource

DEVICE_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
DEFAULT_PREFIX = "labshare/v1"


@dataclass(frozen=True)
class DeviceData:
    device_id: str
    resource_id: int
    usage_source: str
    description: str = ""
    power_threshold_w: Decimal | str | None = None
    debounce_s: int = 60
    heartbeat_timeout_s: int = 300


def _validated(db: Session, data: DeviceData) -> dict:
    errors: dict[str, list[str]] = {}
    if not DEVICE_ID_RE.fullmatch(data.device_id or ""):
        errors["device_id"] = [N_("1 to 64 letters, digits, - or _.")]
    elif db.scalar(select(Device.id).where(Device.device_id == data.device_id)):
        errors["device_id"] = [N_("A device with this id is already registered.")]
    if data.usage_source not in {s.value for s in UsageSource}:
        errors["usage_source"] = [N_("Choose events, status or power.")]
    threshold = None
    if data.power_threshold_w not in (None, ""):
        try:
            threshold = Decimal(str(data.power_threshold_w))
            if not threshold.is_finite() or threshold < 0 or threshold >= Decimal("1e10"):
                raise InvalidOperation
        except (InvalidOperation, ValueError):
            errors["power_threshold_w"] = [N_("Enter a power in watts, 0 or more.")]
    if data.usage_source == UsageSource.POWER and threshold is None and "power_threshold_w" not in errors:
        errors["power_threshold_w"] = [N_("Power-measured devices need a threshold.")]
    if not isinstance(data.debounce_s, int) or not 0 <= data.debounce_s <= 3600:
        errors["debounce_s"] = [N_("Between 0 and 3600 seconds.")]
    if not isinstance(data.heartbeat_timeout_s, int) or not 10 <= data.heartbeat_timeout_s <= 86400:
        errors["heartbeat_timeout_s"] = [N_("Between 10 and 86400 seconds.")]
    if len(data.description or "") > 2000:
        errors["description"] = [N_("At most 2000 characters.")]
    if errors:
        raise InvalidInput(errors)
    return {
        "device_id": data.device_id, "resource_id": data.resource_id,
        "usage_source": UsageSource(data.usage_source), "description": (data.description or "").strip(),
        "power_threshold_w": threshold, "debounce_s": data.debounce_s,
        "heartbeat_timeout_s": data.heartbeat_timeout_s,
    }


def add_device(db: Session, actor: User | None, data: DeviceData) -> tuple[Device, str]:
    """Register a device for a resource of a facility the actor manages; returns it and its broker
    password, which is shown this once (only Mosquitto's hash of it is kept)."""
    resource = db.get(Resource, data.resource_id)
    if resource is None:
        raise NotFound("resource", data.resource_id)
    if actor is not None and not can_manage_facility(db, actor, resource.facility_id):
        raise Forbidden()
    values = _validated(db, data)
    secret = new_secret()
    device = Device(**values, credential_hash=mosquitto_hash(secret))
    db.add(device)
    db.flush()
    audit.record(db, actor, "device.created", device, device_id=device.device_id, resource_id=resource.id)
    return device, secret


def rotate_credential(db: Session, actor: User | None, device_pk: int) -> str:
    device = managed_device(db, actor, device_pk)
    secret = new_secret()
    device.credential_hash = mosquitto_hash(secret)
    audit.record(db, actor, "device.credential_rotated", device, device_id=device.device_id)
    return secret


def set_enabled(db: Session, actor: User | None, device_pk: int, enabled: bool) -> Device:
    device = managed_device(db, actor, device_pk)
    if device.enabled != enabled:
        device.enabled = enabled
        audit.record(db, actor, "device.enabled" if enabled else "device.disabled", device,
                     device_id=device.device_id)
    return device


def managed_device(db: Session, actor: User | None, device_pk: int) -> Device:
    """The device, if `actor` manages its facility (None: the command line); NotFound / Forbidden otherwise."""
    device = db.get(Device, device_pk)
    if device is None:
        raise NotFound("device", device_pk)
    if actor is not None and not can_manage_facility(db, actor, device.resource.facility_id):
        raise Forbidden()
    return device


def _write_atomically(path: Path, text: str) -> None:
    # Mosquitto may re-read on SIGHUP at any moment: it must see the old file or the new one, never half.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def export_mosquitto(db: Session, directory: Path, *, ingest_username: str, ingest_password: str,
                     prefix: str = DEFAULT_PREFIX) -> tuple[Path, Path, int]:
    """Write `passwd` and `acl` for Mosquitto: each enabled device may publish only below its own
    `{prefix}/{device_id}/`, the ingest may read everything below the prefix. Returns the paths and
    the number of devices."""
    if not DEVICE_ID_RE.fullmatch(ingest_username) or db.scalar(
            select(Device.id).where(Device.device_id == ingest_username)):
        raise InvalidInput({"ingest_username": [N_("The ingest needs a user name no device uses.")]})
    devices = db.scalars(select(Device).where(Device.enabled).order_by(Device.device_id)).all()
    prefix = prefix.rstrip("/")
    passwd = [f"{ingest_username}:{mosquitto_hash(ingest_password)}"]
    passwd += [f"{d.device_id}:{d.credential_hash}" for d in devices]
    acl = ["# Written by `labshare devices export-mosquitto`; do not edit: re-export instead.", "",
           f"user {ingest_username}", f"topic read {prefix}/#", ""]
    for d in devices:
        acl += [f"user {d.device_id}", f"topic write {prefix}/{d.device_id}/#", ""]
    directory.mkdir(parents=True, exist_ok=True)
    passwd_path, acl_path = directory / "passwd", directory / "acl"
    _write_atomically(passwd_path, "\n".join(passwd) + "\n")
    _write_atomically(acl_path, "\n".join(acl))
    return passwd_path, acl_path, len(devices)
