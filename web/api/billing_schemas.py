"""marshmallow schemas of the billing API: rate cards, reconciliation, charges, statements and claims.
Money is a string with two places (never a JSON number)."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from billing.models import BillingUnit, ChargeBasis, Resolution
from web.api.schemas import InputSchema, PageQuery, id_field

MONTH_PATTERN = r"^\d{4}-(0[1-9]|1[0-2])$"


def money(**kwargs) -> fields.Decimal:
    return fields.Decimal(as_string=True, places=2, **kwargs)


def money_in(**kwargs) -> fields.Str:
    """An amount as entered: a string like "800" or "123.45" (the service checks it exactly)."""
    return fields.Str(validate=validate.Regexp(r"^\d{1,12}(\.\d{1,2})?$", error="Enter an amount in CNY, such as "
                                                                               "800 or 123.45."), **kwargs)


def fraction_in(**kwargs) -> fields.Str:
    return fields.Str(validate=validate.Regexp(r"^(0(\.\d{1,4})?|1(\.0{1,4})?)$",
                                               error="Enter a share from 0 to 1, such as 0.5."), **kwargs)


class RateCardSchema(Schema):
    id = fields.Int()
    resource_id = fields.Int()
    valid_from = fields.Date()
    valid_to = fields.Date(allow_none=True)
    unit = fields.Str()
    price_internal = money()
    price_academic = money()
    price_enterprise = money()
    minimum_charge = money()
    setup_fee = money()
    technician_fee_per_hour = money()
    no_show_fraction = fields.Decimal(as_string=True)
    late_cancellation_fraction = fields.Decimal(as_string=True)
    basis = fields.Str()
    tolerance_min = fields.Int()
    note = fields.Str()


class RateCardCreate(InputSchema):
    valid_from = fields.Date(required=True)
    valid_to = fields.Date(allow_none=True)
    unit = fields.Str(required=True, validate=validate.OneOf([u.value for u in BillingUnit]))
    price_internal = money_in(required=True)
    price_academic = money_in(required=True)
    price_enterprise = money_in(required=True)
    minimum_charge = money_in(load_default="0")
    setup_fee = money_in(load_default="0")
    technician_fee_per_hour = money_in(load_default="0")
    no_show_fraction = fraction_in(load_default="0")
    late_cancellation_fraction = fraction_in(load_default="0")
    basis = fields.Str(load_default=ChargeBasis.BOOKED.value, validate=validate.OneOf([b.value for b in ChargeBasis]))
    tolerance_min = fields.Int(load_default=15, validate=validate.Range(min=0, max=1440))
    note = fields.Str(load_default="", validate=validate.Length(max=2000))


class RateCardEnd(InputSchema):
    valid_to = fields.Date(required=True, metadata={"description": "the last day the card is valid"})


class ReconciliationItemSchema(Schema):
    id = fields.Int()
    resource_id = fields.Int()
    facility_id = fields.Function(lambda i: i.resource.facility_id)
    kind = fields.Str()
    status = fields.Str()
    reservation_id = fields.Int(allow_none=True)
    usage_session_id = fields.Int(allow_none=True)
    service_date = fields.Date()
    booked_minutes = fields.Int()
    measured_minutes = fields.Int()
    measured_runs = fields.Int()
    metered = fields.Bool()
    resolution = fields.Str(allow_none=True)
    adjusted_minutes = fields.Int(allow_none=True)
    assigned_org_id = fields.Int(allow_none=True)
    assigned_user_id = fields.Int(allow_none=True)
    reason = fields.Str()
    resolved_by_id = fields.Int(allow_none=True)
    resolved_at = fields.AwareDateTime(allow_none=True)


class PeriodSchema(Schema):
    month = fields.Str()
    state = fields.Str(metadata={"description": "not_started, open or closed"})
    reconciled_at = fields.AwareDateTime(allow_none=True)
    closed_at = fields.AwareDateTime(allow_none=True)


class ReconciliationSchema(Schema):
    period = fields.Nested(PeriodSchema)
    open_exceptions = fields.Int()
    items = fields.List(fields.Nested(ReconciliationItemSchema))


class ReconciliationQuery(InputSchema):
    run = fields.Bool(load_default=False, metadata={"description": "finance: reconcile the month first"})
    status = fields.Str(validate=validate.OneOf(["open", "resolved"]))


class ResolveSchema(InputSchema):
    resolution = fields.Str(required=True, validate=validate.OneOf([r.value for r in Resolution]))
    reason = fields.Str(load_default="", validate=validate.Length(max=2000))
    adjusted_minutes = fields.Int(allow_none=True, validate=validate.Range(min=0, max=527040))
    org_id = id_field(allow_none=True)
    user_id = id_field(allow_none=True)


class CloseReportSchema(Schema):
    month = fields.Str()
    charges = fields.Int()
    waived = fields.Int()
    free = fields.Int()
    credit_notes = fields.Int()
    statements = fields.Int()
    total = money()
    statement_numbers = fields.List(fields.Str())


class ChargeLineSchema(Schema):
    id = fields.Int()
    kind = fields.Str()
    description = fields.Str()
    quantity = fields.Decimal(as_string=True)
    unit = fields.Str()
    unit_price = money()
    amount = money()
    voucher_eligible = fields.Bool()


class ChargeSchema(Schema):
    id = fields.Int()
    kind = fields.Str()
    month = fields.Function(lambda c: c.period_month)
    organisation_id = fields.Int()
    user_id = fields.Int(allow_none=True)
    resource_id = fields.Int()
    facility_id = fields.Int()
    reservation_id = fields.Int(allow_none=True)
    usage_session_id = fields.Int(allow_none=True)
    service_date = fields.Date()
    customer_class = fields.Str()
    rate_card_id = fields.Int(allow_none=True)
    total = money()
    voucher_coverage = money()
    net = money()
    credit_of_id = fields.Int(allow_none=True)
    reason = fields.Str()
    statement_id = fields.Int(allow_none=True)
    lines = fields.List(fields.Nested(ChargeLineSchema))


class ChargeQuery(PageQuery):
    month = fields.Str(validate=validate.Regexp(MONTH_PATTERN, error="Enter a month as YYYY-MM."))
    organisation_id = id_field()


class CreditNoteCreate(InputSchema):
    reason = fields.Str(required=True, validate=validate.Length(max=2000))


class StatementSchema(Schema):
    id = fields.Int()
    number = fields.Str()
    month = fields.Str()
    organisation_id = fields.Int()
    total = money()
    voucher_coverage = money()
    net = money()
    issued_at = fields.AwareDateTime()


class StatementLineSchema(Schema):
    charge_id = fields.Int()
    credit_note = fields.Bool()
    service_date = fields.Date()
    facility = fields.Str()
    resource = fields.Str()
    user = fields.Str()
    kind = fields.Str()
    quantity = fields.Decimal(as_string=True)
    unit = fields.Str()
    unit_price = money()
    amount = money()
    voucher = money()
    net = money()


class StatementDetailSchema(StatementSchema):
    organisation = fields.Str()
    credit_code = fields.Str()
    facilities = fields.List(fields.Str())
    lines = fields.List(fields.Nested(StatementLineSchema))


class StatementQuery(ChargeQuery):
    pass


class ExportQuery(InputSchema):
    format = fields.Str(required=True, validate=validate.OneOf(["csv", "xlsx", "pdf"]))
    locale = fields.Str(load_default="zh_CN", validate=validate.OneOf(["zh_CN", "en"]))


class ClaimItemSchema(Schema):
    id = fields.Int()
    application_id = fields.Int()
    charge_id = fields.Int()
    reservation_id = fields.Int(allow_none=True)
    holder_id = fields.Int()
    provider_id = fields.Int()
    service_date = fields.Date()
    eligible_fee = money()
    amount = money()
    sessions = fields.List(fields.Dict())
    evidence_digest = fields.Str(allow_none=True)
    invoice_number = fields.Str()
    payment_reference = fields.Str()
    provider_confirmed_at = fields.AwareDateTime(allow_none=True)
    customer_confirmed_at = fields.AwareDateTime(allow_none=True)


class ClaimSchema(Schema):
    id = fields.Int()
    programme_id = fields.Int()
    period_id = fields.Int()
    month = fields.Function(lambda c: f"{c.period_month}")
    claimant_id = fields.Int()
    mode = fields.Str()
    state = fields.Str()
    total = money()
    created_at = fields.AwareDateTime()
    submitted_at = fields.AwareDateTime(allow_none=True)
    decided_at = fields.AwareDateTime(allow_none=True)
    rejection_reason = fields.Str()
    paid_at = fields.AwareDateTime(allow_none=True)
    payout_reference = fields.Str()
    missing_evidence = fields.Function(lambda c: c.missing)


class ClaimDetailSchema(ClaimSchema):
    items = fields.List(fields.Nested(ClaimItemSchema))


class ClaimQuery(PageQuery):
    state = fields.Str(validate=validate.OneOf(["draft", "submitted", "approved", "rejected", "paid"]))


class ClaimCreate(InputSchema):
    programme_id = id_field(required=True)
    month = fields.Str(required=True, validate=validate.Regexp(MONTH_PATTERN, error="Enter a month as YYYY-MM."))
    claimant_id = id_field(metadata={"description": "admins: the claimant; others: their own organisation"})


class RejectSchema(InputSchema):
    reason = fields.Str(required=True, validate=validate.Length(max=2000))


class PaidSchema(InputSchema):
    payout_reference = fields.Str(required=True, validate=validate.Length(max=64))
