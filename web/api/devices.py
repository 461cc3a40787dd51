"""API: the device registry for lab managers (their facilities) and admins (all). Broker passwords appear once,
in the response that made them."""

from __future__ import annotations

from flask.views import MethodView
from sqlalchemy import select

from booking.models import Resource
from booking.permissions import managed_facility_ids
from core.accounts.models import Role, User
from core.errors import Forbidden
from devices import registry
from devices.models import Device
from devices.registry_edit import update_device
from web.api.auth import current_api_user
from web.api.blueprint import blp
from web.api.device_schemas import (
    DeviceCreate,
    DevicePatch,
    DeviceQuery,
    DeviceSchema,
    NewDeviceSchema,
    RotatedCredentialSchema,
)
from web.api.pagination import paginate
from web.api.schemas import page_of
from web.database import get_db


def _manager() -> User:
    user = current_api_user()
    if not user.has_role(Role.LAB_MANAGER, Role.ADMIN):
        raise Forbidden()
    return user


def _managed_device(device_pk: int) -> Device:
    return registry.managed_device(get_db(), _manager(), device_pk)


def _credential(device: Device, secret: str) -> dict:
    return {"broker_username": device.device_id, "password": secret,
            "topic_prefix": f"{registry.DEFAULT_PREFIX}/{device.device_id}/"}


@blp.route("/devices")
class Devices(MethodView):
    @blp.arguments(DeviceQuery, location="query")
    @blp.response(200, page_of(DeviceSchema))
    def get(self, args):
        """Devices of the facilities you manage (admins: all), by facility and device id."""
        db, user = get_db(), _manager()
        query = select(Device).join(Resource, Device.resource_id == Resource.id).order_by(
            Resource.facility_id, Device.device_id)
        scope = managed_facility_ids(db, user)
        if scope is not None:
            query = query.where(Resource.facility_id.in_(scope))
        if "facility_id" in args:
            query = query.where(Resource.facility_id == args["facility_id"])
        if "resource_id" in args:
            query = query.where(Device.resource_id == args["resource_id"])
        if "enabled" in args:
            query = query.where(Device.enabled.is_(args["enabled"]))
        return paginate(db, query, args["page"], args["per_page"])

    @blp.arguments(DeviceCreate)
    @blp.response(201, NewDeviceSchema)
    def post(self, body):
        """Register a device on a resource of a facility you manage. The broker password is in this response
        only; the broker accepts it once its password file has been exported again."""
        db, user = get_db(), _manager()
        device, secret = registry.add_device(db, user, registry.DeviceData(
            device_id=body["device_id"], resource_id=body["resource_id"], usage_source=body["usage_source"],
            description=body["description"], power_threshold_w=body["power_threshold_w"],
            debounce_s=body["debounce_s"], heartbeat_timeout_s=body["heartbeat_timeout_s"]))
        db.commit()
        # raw values, not DeviceSchema().dump(device): the response schema serialises them (only once)
        return {**{name: getattr(device, name) for name in DeviceSchema().fields if name != "facility_id"},
                "resource": device.resource, **_credential(device, secret)}


@blp.route("/devices/<id:device_pk>")
class DeviceById(MethodView):
    @blp.response(200, DeviceSchema)
    def get(self, device_pk: int):
        """One device of a facility you manage."""
        return _managed_device(device_pk)

    @blp.arguments(DevicePatch)
    @blp.response(200, DeviceSchema)
    def patch(self, body, device_pk: int):
        """Change the description, or enable or disable the device."""
        db = get_db()
        _managed_device(device_pk)
        device = update_device(db, current_api_user(), device_pk, description=body.get("description"),
                               enabled=body.get("enabled"))
        db.commit()
        return device


@blp.route("/devices/<id:device_pk>/credential")
class DeviceCredential(MethodView):
    @blp.response(200, RotatedCredentialSchema)
    def post(self, device_pk: int):
        """Replace the device's broker password; the new one is in this response only."""
        db = get_db()
        device = _managed_device(device_pk)
        secret = registry.rotate_credential(db, current_api_user(), device_pk)
        db.commit()
        return {"id": device.id, "device_id": device.device_id, **_credential(device, secret)}
