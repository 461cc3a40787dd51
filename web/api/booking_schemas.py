"""API schemas of the catalog and booking area. Times are RFC 3339 with an offset; money is a string."""

from __future__ import annotations

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from booking.categories import ServiceCategory
from booking.models import BlackoutKind, OperationMode, RepeatFrequency, ReservationState, ResourceKind
from web.api.schemas import InputSchema, PageQuery, id_field, time_field

MAX_WINDOW_DAYS = 62


def _values(enum_cls) -> list[str]:
    return [e.value for e in enum_cls]


class WindowMixin:
    @validates_schema(skip_on_field_errors=True)
    def _window(self, data, **kwargs):
        start, end = data.get(self.window_fields[0]), data.get(self.window_fields[1])
        if (start is None) != (end is None):
            raise ValidationError("Give both ends of the window or neither.", self.window_fields[1])
        if start is not None and end <= start:
            raise ValidationError("The end must be after the start.", self.window_fields[1])


class FacilityBrief(Schema):
    id = fields.Int()
    name_zh = fields.Str()
    name_en = fields.Str()
    city = fields.Str()
    timezone = fields.Str()


class RulesSchema(Schema):
    granularity_min = fields.Int()
    min_duration_min = fields.Int()
    max_duration_min = fields.Int()
    lead_time_min = fields.Int()
    horizon_days = fields.Int()
    bookable_hours = fields.Dict(keys=fields.Str(), values=fields.Str())
    approval_required = fields.Bool()
    qualification_required = fields.Bool()
    max_active_per_user = fields.Int(allow_none=True)
    cancellation_deadline_h = fields.Int()
    batch_days = fields.Int(allow_none=True)


class SpecSchema(InputSchema):
    key_zh = fields.Str(validate=validate.Length(max=100))
    key_en = fields.Str(validate=validate.Length(max=100))
    value = fields.Str(required=True, validate=validate.Length(min=1, max=500))


class ResourceSchema(Schema):
    id = fields.Int()
    kind = fields.Str()
    name_zh = fields.Str()
    name_en = fields.Str()
    description_zh = fields.Str()
    description_en = fields.Str()
    model = fields.Str()
    manufacturer = fields.Str()
    original_value = fields.Decimal(as_string=True, places=2)
    category = fields.Str()
    operation_mode = fields.Str()
    voucher_eligible = fields.Bool()
    status = fields.Str()
    specs = fields.List(fields.Nested(SpecSchema))
    facility = fields.Nested(FacilityBrief)
    rules = fields.Method("_rules")

    def _rules(self, resource):
        return RulesSchema().dump(resource)


class ResourceQuery(WindowMixin, PageQuery):
    window_fields = ("free_from", "free_to")
    q = fields.Str(load_default="", validate=validate.Length(max=100))
    category = fields.Str(validate=validate.OneOf(_values(ServiceCategory)))
    kind = fields.Str(validate=validate.OneOf(_values(ResourceKind)))
    city = fields.Str(validate=validate.Regexp(r"^\d{6}$"))
    facility_id = id_field()
    operation_mode = fields.Str(validate=validate.OneOf(_values(OperationMode)))
    voucher_eligible = fields.Bool()
    free_from = time_field()
    free_to = time_field()
    sort = fields.Str(load_default="name", validate=validate.OneOf(["name", "value_desc", "value_asc", "newest"]))


class ResourceWrite(InputSchema):
    facility_id = id_field()
    kind = fields.Str(validate=validate.OneOf(_values(ResourceKind)))
    name_zh = fields.Str(validate=validate.Length(min=1, max=200))
    name_en = fields.Str(validate=validate.Length(min=1, max=200))
    description_zh = fields.Str(validate=validate.Length(max=5000))
    description_en = fields.Str(validate=validate.Length(max=5000))
    model = fields.Str(validate=validate.Length(max=200))
    manufacturer = fields.Str(validate=validate.Length(max=200))
    # the bounds as numbers in the OpenAPI document (apispec would render the Decimals as strings)
    original_value = fields.Decimal(places=2, validate=validate.Range(min=0, max=10**11),
                                    metadata={"minimum": 0, "maximum": 10**11})
    category = fields.Str(validate=validate.OneOf(_values(ServiceCategory)))
    operation_mode = fields.Str(validate=validate.OneOf(_values(OperationMode)))
    voucher_eligible = fields.Bool()
    status = fields.Str(validate=validate.OneOf(["active", "retired"]))
    specs = fields.List(fields.Nested(SpecSchema), validate=validate.Length(max=100))
    granularity_min = fields.Int(validate=validate.Range(min=1, max=1440))
    min_duration_min = fields.Int(validate=validate.Range(min=1, max=527040))
    max_duration_min = fields.Int(validate=validate.Range(min=1, max=527040))
    lead_time_min = fields.Int(validate=validate.Range(min=0, max=527040))
    horizon_days = fields.Int(validate=validate.Range(min=1, max=3660))
    bookable_hours = fields.Dict(keys=fields.Str(validate=validate.OneOf(
        ["mon", "tue", "wed", "thu", "fri", "sat", "sun"])), values=fields.Str(validate=validate.Length(max=11)))
    approval_required = fields.Bool()
    qualification_required = fields.Bool()
    max_active_per_user = fields.Int(allow_none=True, validate=validate.Range(min=1, max=1000))
    cancellation_deadline_h = fields.Int(validate=validate.Range(min=0, max=8784))
    batch_days = fields.Int(allow_none=True, validate=validate.Range(min=1, max=1000))


class AvailabilityQuery(WindowMixin, InputSchema):
    window_fields = ("start", "end")
    start = time_field(required=True)
    end = time_field(required=True)

    @validates_schema(skip_on_field_errors=True)
    def _not_too_long(self, data, **kwargs):
        if (data["end"] - data["start"]).days > MAX_WINDOW_DAYS:
            raise ValidationError("At most 62 days at a time.", "end")


class SpanSchema(Schema):
    start = fields.AwareDateTime()
    end = fields.AwareDateTime()
    status = fields.Str(metadata={"description": "free, busy, blackout or closed"})
    kind = fields.Str(metadata={"description": "confirmed/pending for busy; the blackout's kind"})


class AvailabilitySchema(Schema):
    resource_id = fields.Int()
    timezone = fields.Str()
    spans = fields.List(fields.Nested(SpanSchema))


class ReservationSchema(Schema):
    id = fields.Int()
    resource_id = fields.Int()
    user_id = fields.Int()
    billed_org_id = fields.Int()
    starts_at = fields.AwareDateTime()
    ends_at = fields.AwareDateTime()
    state = fields.Str()
    kind = fields.Str()
    purpose = fields.Str()
    sample_count = fields.Int(allow_none=True)
    series_id = fields.Int(allow_none=True)
    late_cancellation = fields.Bool()
    decision_note = fields.Str()
    created_at = fields.AwareDateTime()


class ReservationCreate(WindowMixin, InputSchema):
    window_fields = ("starts_at", "ends_at")
    resource_id = id_field(required=True)
    starts_at = time_field(required=True)
    ends_at = time_field(required=True)
    purpose = fields.Str(load_default="", validate=validate.Length(max=2000))
    sample_count = fields.Int(allow_none=True, validate=validate.Range(min=1, max=10000))
    billed_org_id = id_field(allow_none=True)


class ReservationPatch(WindowMixin, InputSchema):
    window_fields = ("starts_at", "ends_at")
    starts_at = time_field()
    ends_at = time_field()
    purpose = fields.Str(validate=validate.Length(max=2000))

    @validates_schema(skip_on_field_errors=True)
    def _something(self, data, **kwargs):
        if not data:
            raise ValidationError("Give starts_at and ends_at, or purpose.")


class ReservationQuery(WindowMixin, PageQuery):
    window_fields = ("start", "end")
    scope = fields.Str(load_default="mine", validate=validate.OneOf(["mine", "managed", "all"]))
    resource_id = id_field()
    state = fields.Str(validate=validate.OneOf(_values(ReservationState)))
    start = time_field()
    end = time_field()


class DecisionSchema(InputSchema):
    note = fields.Str(load_default="", validate=validate.Length(max=2000))


class SeriesCreate(ReservationCreate):
    frequency = fields.Str(required=True, validate=validate.OneOf(_values(RepeatFrequency)))
    occurrences = fields.Int(required=True, validate=validate.Range(min=1, max=52))
    skip_conflicts = fields.Bool(load_default=False)
    dry_run = fields.Bool(load_default=False)


class ProblemSchema(Schema):
    code = fields.Str()
    message = fields.Str()


class OccurrenceSchema(Schema):
    starts_at = fields.AwareDateTime()
    ends_at = fields.AwareDateTime()
    bookable = fields.Bool()
    violations = fields.List(fields.Dict())
    clashes = fields.List(fields.Dict())


class SeriesResult(Schema):
    series_id = fields.Int(allow_none=True)
    created = fields.List(fields.Nested(ReservationSchema))
    occurrences = fields.List(fields.Nested(OccurrenceSchema))


class PreviewSchema(Schema):
    bookable = fields.Bool()
    violations = fields.List(fields.Dict())
    clashes = fields.List(fields.Dict())


class BlackoutSchema(Schema):
    id = fields.Int()
    resource_id = fields.Int()
    starts_at = fields.AwareDateTime()
    ends_at = fields.AwareDateTime()
    kind = fields.Str()
    reason = fields.Str()


class BlackoutCreate(WindowMixin, InputSchema):
    window_fields = ("starts_at", "ends_at")
    starts_at = time_field(required=True)
    ends_at = time_field(required=True)
    kind = fields.Str(required=True, validate=validate.OneOf(_values(BlackoutKind)))
    reason = fields.Str(load_default="", validate=validate.Length(max=2000))
    cancel_conflicting = fields.Bool(load_default=False)


class QualificationSchema(Schema):
    id = fields.Int()
    user_id = fields.Int()
    resource_id = fields.Int()
    granted_at = fields.AwareDateTime()
    expires_at = fields.AwareDateTime(allow_none=True)
    revoked_at = fields.AwareDateTime(allow_none=True)


class QualificationCreate(InputSchema):
    user_id = id_field(required=True)
    expires_at = time_field(allow_none=True)


class WaitlistSchema(Schema):
    id = fields.Int()
    resource_id = fields.Int()
    starts_at = fields.AwareDateTime()
    ends_at = fields.AwareDateTime()
    notified_at = fields.AwareDateTime(allow_none=True)


class WaitlistCreate(WindowMixin, InputSchema):
    window_fields = ("starts_at", "ends_at")
    resource_id = id_field(required=True)
    starts_at = time_field(required=True)
    ends_at = time_field(required=True)


class SampleRequestSchema(Schema):
    id = fields.Int()
    resource_id = fields.Int()
    user_id = fields.Int()
    sample_count = fields.Int()
    description = fields.Str()
    hazards = fields.Str()
    state = fields.Str()
    reservation_id = fields.Int(allow_none=True)
    note = fields.Str()
    created_at = fields.AwareDateTime()


class SampleRequestCreate(InputSchema):
    resource_id = id_field(required=True)
    sample_count = fields.Int(required=True, validate=validate.Range(min=1, max=10000))
    description = fields.Str(required=True, validate=validate.Length(min=1, max=4000))
    hazards = fields.Str(load_default="", validate=validate.Length(max=2000))


class ScheduleSchema(WindowMixin, InputSchema):
    window_fields = ("starts_at", "ends_at")
    starts_at = time_field(required=True)
    ends_at = time_field(required=True)


class FeedCreate(InputSchema):
    resource_id = id_field(allow_none=True)


class FeedSchema(Schema):
    url = fields.Str()
