"""marshmallow schemas of the API's edges. Output schemas list their fields, so no column leaks."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from functools import cache

from marshmallow import Schema, ValidationError, fields, pre_load, validate

from core.errors import N_

# Row ids are PostgreSQL `integer`s; a larger number cannot name a row (and fails in the database, not as a 404).
MAX_ID = 2**31 - 1
NUL_MESSAGE = N_("Text must not contain NUL characters.")
YEAR_RANGE_MESSAGE = N_("Give a time between the years 1900 and 2999.")


def _has_nul(value) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, Mapping):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_has_nul(v) for v in value)
    return False


# Times the API accepts. Outside these years nothing can be booked, and date arithmetic in a facility's zone
# (a day before, a day after) would overflow Python's datetime instead of failing validation.
EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)
LATEST = datetime(2999, 12, 31, tzinfo=UTC)


def time_field(**kwargs) -> fields.AwareDateTime:
    """An RFC 3339 time with an offset, from 1900 to 2999."""
    return fields.AwareDateTime(validate=validate.Range(min=EARLIEST, max=LATEST, error=YEAR_RANGE_MESSAGE), **kwargs)


class InputSchema(Schema):
    """Base of the API's input schemas: text with NUL characters is refused as invalid input (PostgreSQL cannot
    store it, so it would otherwise fail in the database)."""

    @pre_load
    def _refuse_nul(self, data, **kwargs):
        if isinstance(data, Mapping):
            bad = sorted(str(key) for key, value in data.items() if _has_nul(key) or _has_nul(value))
            if bad:
                raise ValidationError({key: [NUL_MESSAGE] for key in bad})
        return data


def id_field(**kwargs) -> fields.Int:
    """A field holding a row id."""
    return fields.Int(validate=validate.Range(min=1, max=MAX_ID), **kwargs)


class PageQuery(InputSchema):
    page = fields.Int(load_default=1, validate=validate.Range(min=1, max=100_000))
    per_page = fields.Int(load_default=20, validate=validate.Range(min=1, max=100))


@cache  # one page schema per item schema: the OpenAPI document names it once
def page_of(item_schema: type[Schema]) -> type[Schema]:
    """`{"items": [...], "page", "per_page", "total"}` around `item_schema`."""
    return Schema.from_dict({
        "items": fields.List(fields.Nested(item_schema)),
        "page": fields.Int(),
        "per_page": fields.Int(),
        "total": fields.Int(),
    }, name=f"{item_schema.__name__.removesuffix('Schema')}Page")


class OrganisationSchema(Schema):
    id = fields.Int()
    name_zh = fields.Str()
    name_en = fields.Str()
    credit_code = fields.Str()
    kind = fields.Str()
    city = fields.Str()
    tech_sme = fields.Bool()


class OrganisationQuery(PageQuery):
    kind = fields.Str(validate=validate.OneOf(["university", "institute", "enterprise", "government"]))
    city = fields.Str(validate=validate.Regexp(r"^\d{6}$"))
    tech_sme = fields.Bool()


class MeSchema(Schema):
    id = fields.Int()
    email = fields.Str()
    name_zh = fields.Str()
    name_en = fields.Str()
    locale = fields.Str()
    roles = fields.List(fields.Str())
    organisation = fields.Nested(OrganisationSchema)
    managed_facility_ids = fields.List(fields.Int(), allow_none=True,
                                       metadata={"description": "null: all facilities (admin)"})


class TokenSchema(Schema):
    id = fields.Int()
    name = fields.Str()
    prefix = fields.Str()
    created_at = fields.AwareDateTime()
    last_used_at = fields.AwareDateTime(allow_none=True)
    revoked_at = fields.AwareDateTime(allow_none=True)


class NewTokenSchema(TokenSchema):
    token = fields.Str(metadata={"description": "the secret; shown only in this response"})


class TokenCreate(InputSchema):
    name = fields.Str(required=True, validate=validate.Length(min=1, max=100))


class FacilitySchema(Schema):
    id = fields.Int()
    name_zh = fields.Str()
    name_en = fields.Str()
    city = fields.Str()
    address_zh = fields.Str()
    address_en = fields.Str()
    timezone = fields.Str()
    owner_id = fields.Int()
    opening_hours = fields.Dict(keys=fields.Str(), values=fields.Str())
    manager_ids = fields.Function(lambda facility: sorted(user.id for user in facility.managers),
                                  metadata={"description": "the users who manage this facility"})


class FacilityUpdate(InputSchema):
    """A facility's editable fields; the service checks the city, time zone, hours and owner."""

    name_zh = fields.Str(validate=validate.Length(min=1, max=200))
    name_en = fields.Str(validate=validate.Length(min=1, max=200))
    owner_id = id_field()
    city = fields.Str(metadata={"description": "a Sichuan city or prefecture code, e.g. 510100"})
    address_zh = fields.Str(validate=validate.Length(max=300))
    address_en = fields.Str(validate=validate.Length(max=300))
    timezone = fields.Str(metadata={"description": "an IANA time zone, e.g. Asia/Shanghai"})
    opening_hours = fields.Dict(keys=fields.Str(), values=fields.Str(),
                                metadata={"description": '{"mon": "08:30-17:30", ...}; a missing weekday is closed'})


class FacilityCreate(FacilityUpdate):
    name_zh = fields.Str(required=True, validate=validate.Length(min=1, max=200))
    name_en = fields.Str(required=True, validate=validate.Length(min=1, max=200))
    owner_id = id_field(required=True)
    city = fields.Str(required=True, metadata={"description": "a Sichuan city or prefecture code, e.g. 510100"})
