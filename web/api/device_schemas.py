"""API schemas of the device registry. Formats and ranges are checked by devices.registry (its messages are
translated); the bounds here document them in the OpenAPI document."""

from __future__ import annotations

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from core.errors import N_
from devices.models import UsageSource
from devices.registry import DEFAULT_PREFIX
from web.api.schemas import InputSchema, PageQuery, id_field

SOURCES = [s.value for s in UsageSource]


class DeviceSchema(Schema):
    id = fields.Int(metadata={"description": "the numeric id used in paths"})
    device_id = fields.Str(metadata={"description": "the MQTT topic level and broker user name"})
    resource_id = fields.Int()
    facility_id = fields.Int(attribute="resource.facility_id")
    description = fields.Str()
    usage_source = fields.Str(metadata={"enum": SOURCES})
    power_threshold_w = fields.Float(allow_none=True)
    debounce_s = fields.Int()
    heartbeat_timeout_s = fields.Int()
    enabled = fields.Bool()
    created_at = fields.AwareDateTime()


class DeviceCredentialSchema(Schema):
    """The broker credential of a device: the password is in this response only (only its hash is kept)."""

    broker_username = fields.Str(metadata={"description": "the device id"})
    password = fields.Str(metadata={"description": "the broker password; shown only in this response"})
    topic_prefix = fields.Str(metadata={
        "description": f"the device may publish only below it: {DEFAULT_PREFIX}/<device_id>/"})


class NewDeviceSchema(DeviceSchema, DeviceCredentialSchema):
    pass


class RotatedCredentialSchema(DeviceCredentialSchema):
    id = fields.Int()
    device_id = fields.Str()


class DeviceQuery(PageQuery):
    facility_id = id_field()
    resource_id = id_field()
    enabled = fields.Bool()


class DeviceCreate(InputSchema):
    resource_id = id_field(required=True)
    device_id = fields.Str(required=True, metadata={"pattern": "^[A-Za-z0-9_-]{1,64}$"})
    description = fields.Str(load_default="", metadata={"maxLength": 2000})
    usage_source = fields.Str(required=True, validate=validate.OneOf(SOURCES))
    power_threshold_w = fields.Decimal(allow_none=True, load_default=None, allow_nan=False,
                                       metadata={"minimum": 0, "description": "watts; required for usage_source power"})
    debounce_s = fields.Int(load_default=60, metadata={"minimum": 0, "maximum": 3600})
    heartbeat_timeout_s = fields.Int(load_default=300, metadata={"minimum": 10, "maximum": 86400})


class DevicePatch(InputSchema):
    description = fields.Str(metadata={"maxLength": 2000})
    enabled = fields.Bool(metadata={"description": "a disabled device's messages are dropped and it is left out of "
                                                  "the broker's password file"})

    @validates_schema
    def _something(self, data, **kwargs):
        if not data:
            raise ValidationError(N_("Give description or enabled."))
