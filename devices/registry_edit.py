"""Changing a registered device after the fact: its description and whether it may connect."""

from __future__ import annotations

from sqlalchemy.orm import Session

from core import audit
from core.accounts.models import User
from core.errors import N_, InvalidInput
from devices.models import Device
from devices.registry import managed_device, set_enabled

MAX_DESCRIPTION = 2000


def update_device(db: Session, actor: User | None, device_pk: int, *, description: str | None = None,
                  enabled: bool | None = None) -> Device:
    """Change the description and/or the enabled flag of a device of a facility the actor manages;
    None leaves a value as it is. Each change is in the audit log."""
    device = managed_device(db, actor, device_pk)
    if description is not None:
        text = description.strip()
        if len(text) > MAX_DESCRIPTION:
            raise InvalidInput({"description": [N_("At most 2000 characters.")]})
        if text != device.description:
            device.description = text
            audit.record(db, actor, "device.updated", device, device_id=device.device_id, fields=["description"])
    if enabled is not None:
        set_enabled(db, actor, device_pk, enabled)
    return device
