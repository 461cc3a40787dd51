"""marshmallow schemas of the open-sharing report API: hours and rates as exact decimal strings."""

from __future__ import annotations

from datetime import date

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from core.errors import N_
from reports.sharing import GROUPINGS
from web.api.billing_schemas import money
from web.api.schemas import PageQuery, id_field

GROUPS = ("instrument", *GROUPINGS)
DAYS = validate.Range(min=date(1900, 1, 1), max=date(2999, 12, 31), error=N_("Give a day between the years 1900 "
                                                                             "and 2999."))


def hours(**kwargs) -> fields.Decimal:
    return fields.Decimal(as_string=True, places=2, **kwargs)


def rate(**kwargs) -> fields.Decimal:
    """A share from 0 to 1 with four places (0.4454 = 44.54 %); null when there is nothing to divide."""
    return fields.Decimal(as_string=True, places=4, allow_none=True, **kwargs)


class SharingQuery(PageQuery):
    year = fields.Int(validate=validate.Range(min=2000, max=2999))
    start = fields.Date(validate=DAYS)
    end = fields.Date(validate=DAYS)
    group = fields.Str(load_default="instrument", validate=validate.OneOf(GROUPS))
    facility_id = id_field()
    city = fields.Str(validate=validate.Regexp(r"^\d{6}$", error=N_("Give a 6-digit region code.")))
    format = fields.Str(load_default="json", validate=validate.OneOf(["json", "csv", "xlsx"]))
    locale = fields.Str(load_default="zh_CN", validate=validate.OneOf(["zh_CN", "en"]))
    per_page = fields.Int(load_default=100, validate=validate.Range(min=1, max=1000))

    @validates_schema
    def _one_range(self, data, **kwargs):
        if "year" in data and ("start" in data or "end" in data):
            raise ValidationError(N_("Give either a year or a start and an end, not both."), "year")
        if "year" not in data and not ("start" in data and "end" in data):
            raise ValidationError(N_("Give a year, or a start and an end."), "year")


class RangeQuery(PageQuery):
    start = fields.Date(required=True, validate=DAYS)
    end = fields.Date(required=True, validate=DAYS)
    per_page = fields.Int(load_default=100, validate=validate.Range(min=1, max=1000))


class FiguresSchema(Schema):
    instruments = fields.Int()
    metered_instruments = fields.Int()
    effective_hours = hours()
    external_hours = hours()
    sharing_rate = rate()
    bookable_hours = hours()
    idle_share = rate()
    sessions = fields.Int()
    external_sessions = fields.Int()
    reservations_due = fields.Int()
    no_shows = fields.Int()
    no_show_rate = rate()
    users_served = fields.Int()
    organisations_served = fields.Int()
    external_organisations_served = fields.Int()
    income = money()
    external_income = money()
    voucher_subsidy = money()
    voucher_share = rate()


class InstrumentSchema(FiguresSchema):
    resource_id = fields.Int()
    name_zh = fields.Str()
    name_en = fields.Str()
    kind = fields.Str()
    category = fields.Str()
    model = fields.Str()
    manufacturer = fields.Str()
    original_value = money()
    operation_mode = fields.Str()
    facility_id = fields.Int()
    owner_id = fields.Int()
    city = fields.Str()
    metered = fields.Bool()
    fee_standard = fields.Str()
    sessions_url = fields.Str(metadata={"description": "the usage sessions behind the hours"})
    charges_url = fields.Str(metadata={"description": "the charges behind the income"})


class GroupSchema(FiguresSchema):
    key = fields.Raw()
    name_zh = fields.Str()
    name_en = fields.Str()


class SharingReportSchema(Schema):
    start = fields.Date(validate=DAYS)
    end = fields.Date(validate=DAYS)
    group = fields.Str()
    totals = fields.Nested(FiguresSchema)
    items = fields.List(fields.Raw(), metadata={"description": "InstrumentFigures or GroupFigures by `group`"})
    page = fields.Int()
    per_page = fields.Int()
    total = fields.Int(metadata={"description": "how many items in all pages"})


class SessionSourceSchema(Schema):
    session_id = fields.Int()
    device_id = fields.Str()
    started_at = fields.AwareDateTime()
    ended_at = fields.AwareDateTime(allow_none=True)
    counted_hours = hours()
    reservation_id = fields.Int(allow_none=True)
    organisation_id = fields.Int(allow_none=True)
    user_id = fields.Int(allow_none=True)
    external = fields.Bool()
