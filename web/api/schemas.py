"""marshmallow schemas of the API's edges. Output schemas list their fields, so no column leaks."""

from __future__ import annotations

from marshmallow import Schema, fields, validate


class PageQuery(Schema):
    page = fields.Int(load_default=1, validate=validate.Range(min=1, max=100_000))
    per_page = fields.Int(load_default=20, validate=validate.Range(min=1, max=100))


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


class TokenCreate(Schema):
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
