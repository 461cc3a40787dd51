"""WTForms of the booking pages, and the conversion of their local dates and times to UTC windows."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import (
    BooleanField,
    DateField,
    DateTimeLocalField,
    DecimalField,
    FieldList,
    Form,
    FormField,
    HiddenField,
    IntegerField,
    RadioField,
    SelectChoice,
    SelectField,
    StringField,
    TextAreaField,
    TimeField,
)
from wtforms.validators import (
    DataRequired,
    InputRequired,
    Length,
    NumberRange,
    Optional,
    Regexp,
    ValidationError,
)

from booking.hours import WEEKDAYS, parse_span
from booking.models import BlackoutKind, OperationMode, RepeatFrequency, Resource, ResourceKind, ResourceStatus
from booking.reservations import MAX_REPEATS


def choices(*pairs) -> list[SelectChoice]:
    return [SelectChoice(value, label) for value, label in pairs]


INVALID_DATE = _l("Enter a date.")
INVALID_TIME = _l("Enter a time as HH:MM.")
INVALID_NUMBER = _l("Enter a whole number.")

SORT_CHOICES = choices(("name", _l("Name")), ("value_desc", _l("Original value, highest first")),
                       ("value_asc", _l("Original value, lowest first")), ("newest", _l("Newest first")))
KIND_CHOICES = choices((ResourceKind.INSTRUMENT.value, _l("Instrument")),
                       (ResourceKind.PILOT_LINE.value, _l("Pilot line")))
MODE_CHOICES = choices((OperationMode.SELF_SERVICE.value, _l("Self-service")),
                       (OperationMode.TECHNICIAN.value, _l("Technician-run (send samples)")),
                       (OperationMode.BOTH.value, _l("Self-service or technician-run")))
STATUS_CHOICES = choices((ResourceStatus.ACTIVE.value, _l("Active")), (ResourceStatus.RETIRED.value, _l("Retired")))
BLACKOUT_CHOICES = choices((BlackoutKind.MAINTENANCE.value, _l("Maintenance")),
                           (BlackoutKind.CALIBRATION.value, _l("Calibration")),
                           (BlackoutKind.HOLIDAY.value, _l("Holiday")))
WEEKDAY_LABELS = {"mon": _l("Monday"), "tue": _l("Tuesday"), "wed": _l("Wednesday"), "thu": _l("Thursday"),
                  "fri": _l("Friday"), "sat": _l("Saturday"), "sun": _l("Sunday")}


def local_moment(day: date, at: time, tz: ZoneInfo) -> datetime:
    return datetime.combine(day, at, tzinfo=tz)


# --- catalog ------------------------------------------------------------------------------------------------

class CatalogForm(FlaskForm):
    """The catalog's search (a GET form: no CSRF token). Time-first search: a date and a from–to window."""

    class Meta:
        csrf = False

    q = StringField(_l("Search"), validators=[Optional(), Length(max=100)])
    category = SelectField(_l("Service category"), choices=[], validate_choice=False)
    kind = SelectField(_l("Type"), choices=[SelectChoice("", _l("All types")), *KIND_CHOICES], validate_choice=False)
    city = SelectField(_l("City"), choices=[], validate_choice=False)
    facility = SelectField(_l("Facility"), choices=[], validate_choice=False)
    mode = SelectField(_l("Operation"), choices=[SelectChoice("", _l("Any operation")), *MODE_CHOICES[:2]],
                       validate_choice=False)
    voucher = SelectField(_l("Innovation voucher"), choices=choices(("", _l("Any")), ("1", _l("Voucher eligible")),
                                                                    ("0", _l("Not voucher eligible"))),
                          validate_choice=False)
    date = DateField(_l("Free on"), validators=[Optional()], invalid_value_message=INVALID_DATE)
    time_from = TimeField(_l("From"), validators=[Optional()], invalid_value_message=INVALID_TIME)
    time_to = TimeField(_l("To"), validators=[Optional()], invalid_value_message=INVALID_TIME)
    sort = SelectField(_l("Sort by"), choices=SORT_CHOICES, default="name", validate_choice=False)

    def validate(self, extra_validators=None) -> bool:
        valid = super().validate(extra_validators)
        parts = (self.date, self.time_from, self.time_to)
        if any(f.errors for f in parts):
            return False
        given = [f for f in parts if f.data is not None]
        if given and len(given) < 3:
            self.time_to.errors.append(_l("For a time-first search give a date, a start and an end."))
            return False
        if self.time_from.data and self.time_to.data and self.time_to.data <= self.time_from.data:
            self.time_to.errors.append(_l("The end must be after the start."))
            return False
        return valid

    def window(self, tz: ZoneInfo) -> tuple[datetime, datetime] | None:
        if self.date.data and self.time_from.data and self.time_to.data and not self.errors:
            return (local_moment(self.date.data, self.time_from.data, tz),
                    local_moment(self.date.data, self.time_to.data, tz))
        return None


# --- booking ------------------------------------------------------------------------------------------------

class BookingForm(FlaskForm):
    """A booking on the resource page. Instruments: a date and a from–to time (an end of 00:00 is
    midnight); pilot lines: a start date and a number of days (or batches)."""

    date = DateField(_l("Date"), validators=[InputRequired(_l("Choose a date."))], invalid_value_message=INVALID_DATE)
    time_from = TimeField(_l("From"), validators=[Optional()], invalid_value_message=INVALID_TIME)
    time_to = TimeField(_l("To"), validators=[Optional()], invalid_value_message=INVALID_TIME)
    end_date = DateField(_l("End date (if a later day)"), validators=[Optional()], invalid_value_message=INVALID_DATE)
    days = IntegerField(_l("Number of days"), validators=[Optional(), NumberRange(1, 366)],
                        invalid_value_message=INVALID_NUMBER)
    purpose = TextAreaField(_l("Purpose"), validators=[Length(max=2000)])
    sample_count = IntegerField(_l("Number of samples"), validators=[Optional(), NumberRange(1, 10_000)],
                                invalid_value_message=INVALID_NUMBER)
    repeat = SelectField(_l("Repeat"), choices=choices(
        ("", _l("Does not repeat")), (RepeatFrequency.DAILY.value, _l("Daily")),
        (RepeatFrequency.WEEKLY.value, _l("Weekly"))), validate_choice=False)
    occurrences = IntegerField(_l("Number of times"), default=4,
                               validators=[Optional(), NumberRange(2, MAX_REPEATS,
                                                                   _l("Repeat between 2 and 52 times."))],
                               invalid_value_message=INVALID_NUMBER)
    conflicts = RadioField(_l("If some times cannot be booked"),
                           choices=choices(("all", _l("Book nothing (all or nothing)")),
                                           ("skip", _l("Book the others and skip those"))),
                           default="all", validate_choice=False)

    def window(self, resource: Resource) -> tuple[datetime, datetime] | None:
        """The UTC window the fields describe, or None with messages on the fields."""
        if not self.validate():
            return None
        tz = ZoneInfo(resource.facility.timezone)
        day: date = self.date.data
        if resource.books_whole_days:
            count = self.days.data
            if count is None:
                self.days.errors.append(_l("Give the number of days.") if not resource.batch_days
                                        else _l("Give the number of batches."))
                return None
            length = count * (resource.batch_days or 1)
            return local_moment(day, time(0), tz), local_moment(day + timedelta(days=length), time(0), tz)
        missing = False
        for field in (self.time_from, self.time_to):
            if field.data is None and not field.errors:
                field.errors.append(_l("Choose a time."))
                missing = True
        if missing:
            return None
        end_day = self.end_date.data or day
        if end_day == day and self.time_to.data == time(0) and self.time_from.data != time(0):
            end_day = day + timedelta(days=1)  # "to 00:00" is the midnight that ends the day
        start, end = local_moment(day, self.time_from.data, tz), local_moment(end_day, self.time_to.data, tz)
        if end <= start:
            self.time_to.errors.append(_l("The end must be after the start."))
            return None
        return start, end

    @property
    def repeat_frequency(self) -> RepeatFrequency | None:
        return RepeatFrequency(self.repeat.data) if self.repeat.data else None


class SampleRequestForm(FlaskForm):
    sample_count = IntegerField(_l("Number of samples"),
                                validators=[InputRequired(_l("Give the number of samples.")), NumberRange(1, 10_000)],
                                invalid_value_message=INVALID_NUMBER)
    description = TextAreaField(_l("Samples and analysis wanted"),
                                validators=[DataRequired(_l("Describe the samples and the analysis wanted.")),
                                            Length(max=4000)])
    hazards = TextAreaField(_l("Hazards (toxic, flammable, radioactive, biological …)"),
                            validators=[Length(max=2000)])


class ModifyForm(FlaskForm):
    """A new time for one of my reservations, in the facility's local time."""

    starts_at = DateTimeLocalField(_l("Start"), validators=[InputRequired(_l("Enter a date and time."))],
                                   format=["%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M"],
                                   invalid_value_message=_l("Enter a date and time."))
    ends_at = DateTimeLocalField(_l("End"), validators=[InputRequired(_l("Enter a date and time."))],
                                 format=["%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M"],
                                 invalid_value_message=_l("Enter a date and time."))
    purpose = TextAreaField(_l("Purpose"), validators=[Length(max=2000)])

    def validate_ends_at(self, field) -> None:
        if self.starts_at.data and field.data and field.data <= self.starts_at.data:
            raise ValidationError(_l("The end must be after the start."))


class CancelForm(FlaskForm):
    reason = StringField(_l("Reason (optional)"), validators=[Length(max=500)])
    next = HiddenField()


# --- lab managers ---------------------------------------------------------------------------------------------

class DecisionForm(FlaskForm):
    note = StringField(_l("Note to the user"), validators=[Length(max=500)])
    next = HiddenField()


class ScheduleForm(FlaskForm):
    """A slot for a sample request (the technician's local date and times)."""

    date = DateField(_l("Date"), validators=[InputRequired(_l("Choose a date."))], invalid_value_message=INVALID_DATE)
    time_from = TimeField(_l("From"), validators=[InputRequired(_l("Choose a time."))],
                          invalid_value_message=INVALID_TIME)
    time_to = TimeField(_l("To"), validators=[InputRequired(_l("Choose a time."))], invalid_value_message=INVALID_TIME)
    end_date = DateField(_l("End date (if a later day)"), validators=[Optional()], invalid_value_message=INVALID_DATE)

    def validate_time_to(self, field) -> None:
        if self.date.data and self.time_from.data and field.data and self.window(ZoneInfo("UTC"))[1] <= \
                self.window(ZoneInfo("UTC"))[0]:
            raise ValidationError(_l("The end must be after the start."))

    def window(self, tz: ZoneInfo) -> tuple[datetime, datetime]:
        """From date + from to end date (or the same day; "to 00:00" is the midnight that ends it) + to."""
        end_day = self.end_date.data or self.date.data
        if not self.end_date.data and self.time_to.data == time(0):
            end_day = self.date.data + timedelta(days=1)
        return local_moment(self.date.data, self.time_from.data, tz), local_moment(end_day, self.time_to.data, tz)


class BlackoutForm(FlaskForm):
    kind = SelectField(_l("Kind"), choices=BLACKOUT_CHOICES, validate_choice=False)
    starts_at = DateTimeLocalField(_l("From"), validators=[InputRequired(_l("Enter a date and time."))],
                                   format=["%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M"],
                                   invalid_value_message=_l("Enter a date and time."))
    ends_at = DateTimeLocalField(_l("Until"), validators=[InputRequired(_l("Enter a date and time."))],
                                 format=["%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M"],
                                 invalid_value_message=_l("Enter a date and time."))
    reason = StringField(_l("Reason"), validators=[Length(max=500)])
    cancel_conflicting = BooleanField(_l("Cancel the reservations inside this window (their users are told)"))

    def validate_ends_at(self, field) -> None:
        if self.starts_at.data and field.data and field.data <= self.starts_at.data:
            raise ValidationError(_l("The end must be after the start."))


class QualificationForm(FlaskForm):
    email = StringField(_l("User's e-mail address"),
                        validators=[DataRequired(_l("Enter an e-mail address.")),
                                    Regexp(r"^[^@\s]+@[^@\s]+$", message=_l("Enter a valid e-mail address.")),
                                    Length(max=254)])
    expires_at = DateField(_l("Valid until (optional)"), validators=[Optional()], invalid_value_message=INVALID_DATE)


def _span_validator(_form, field) -> None:
    if field.data and field.data.strip():
        try:
            parse_span(field.data)
        except ValueError:
            raise ValidationError(_l("Write the hours as HH:MM-HH:MM, e.g. 08:30-17:30.")) from None


class SpecForm(Form):
    """One row of the specification table; a row left empty is dropped."""

    key_zh = StringField(_l("Name in Chinese"), validators=[Length(max=100)])
    key_en = StringField(_l("Name in English"), validators=[Length(max=100)])
    value = StringField(_l("Value"), validators=[Length(max=300)])

    def validate_value(self, field) -> None:
        if (self.key_zh.data or self.key_en.data or "").strip() and not (field.data or "").strip():
            raise ValidationError(_l("Give a value."))
        if (field.data or "").strip() and not (self.key_zh.data or self.key_en.data or "").strip():
            raise ValidationError(_l("Give the specification a name."))

    def as_spec(self) -> dict[str, str] | None:
        row = {k: (getattr(self, k).data or "").strip() for k in ("key_zh", "key_en", "value")}
        return row if any(row.values()) else None


def _integer(label, low: int, high: int, *, required: bool = True) -> IntegerField:
    validators = [InputRequired(_l("Enter a whole number.")) if required else Optional(),
                  NumberRange(low, high, _l("Enter a whole number from %(min)s to %(max)s."))]
    return IntegerField(label, validators=validators, invalid_value_message=INVALID_NUMBER)


class ResourceForm(FlaskForm):
    kind = SelectField(_l("Type"), choices=KIND_CHOICES, validate_choice=False)
    name_zh = StringField(_l("Name in Chinese"), validators=[DataRequired(_l("Enter a name.")), Length(max=200)])
    name_en = StringField(_l("Name in English"), validators=[DataRequired(_l("Enter a name.")), Length(max=200)])
    description_zh = TextAreaField(_l("Description (Chinese)"), validators=[Length(max=5000)])
    description_en = TextAreaField(_l("Description (English)"), validators=[Length(max=5000)])
    model = StringField(_l("Model"), validators=[Length(max=200)])
    manufacturer = StringField(_l("Manufacturer"), validators=[Length(max=200)])
    original_value = DecimalField(_l("Original value (CNY)"), places=2,
                                  validators=[InputRequired(_l("Enter an amount in CNY.")),
                                              NumberRange(min=0, message=_l("Enter an amount in CNY, 0 or more."))],
                                  invalid_value_message=_l("Enter an amount in CNY, 0 or more."))
    category = SelectField(_l("Service category"), choices=[], validate_choice=False)
    operation_mode = SelectField(_l("Operation"), choices=MODE_CHOICES, validate_choice=False)
    voucher_eligible = BooleanField(_l("Innovation vouchers can pay for it"))
    status = SelectField(_l("Status"), choices=STATUS_CHOICES, validate_choice=False)
    specs = FieldList(FormField(SpecForm), min_entries=0)

    granularity_min = _integer(_l("Grid (minutes; 1440 = whole days)"), 1, 1440)
    min_duration_min = _integer(_l("Shortest booking (minutes)"), 1, 60 * 24 * 366)
    max_duration_min = _integer(_l("Longest booking (minutes)"), 1, 60 * 24 * 366)
    lead_time_min = _integer(_l("Book at least this far ahead (minutes)"), 0, 60 * 24 * 366)
    horizon_days = _integer(_l("Book at most this far ahead (days)"), 1, 3660)
    cancellation_deadline_h = _integer(_l("Free cancellation until (hours before the start)"), 0, 24 * 366)
    max_active_per_user = _integer(_l("Active bookings per user (empty: no limit)"), 1, 1000, required=False)
    batch_days = _integer(_l("Batch length in days (pilot lines; empty: any number of days)"), 1, 1000,
                          required=False)
    approval_required = BooleanField(_l("A lab manager approves each booking"))
    qualification_required = BooleanField(_l("Self-service needs a qualification"))
    hours_mon = StringField(WEEKDAY_LABELS["mon"], validators=[Optional(), _span_validator])
    hours_tue = StringField(WEEKDAY_LABELS["tue"], validators=[Optional(), _span_validator])
    hours_wed = StringField(WEEKDAY_LABELS["wed"], validators=[Optional(), _span_validator])
    hours_thu = StringField(WEEKDAY_LABELS["thu"], validators=[Optional(), _span_validator])
    hours_fri = StringField(WEEKDAY_LABELS["fri"], validators=[Optional(), _span_validator])
    hours_sat = StringField(WEEKDAY_LABELS["sat"], validators=[Optional(), _span_validator])
    hours_sun = StringField(WEEKDAY_LABELS["sun"], validators=[Optional(), _span_validator])

    BLANK_SPEC_ROWS = 3

    def hours_fields(self):
        return [getattr(self, f"hours_{day}") for day in WEEKDAYS]

    def fill_from(self, resource) -> None:
        """Show a resource (GET): its values, its specification rows and a few blank ones."""
        for name in ("kind", "name_zh", "name_en", "description_zh", "description_en", "model", "manufacturer",
                     "original_value", "category", "operation_mode", "voucher_eligible", "status",
                     "granularity_min", "min_duration_min", "max_duration_min", "lead_time_min", "horizon_days",
                     "cancellation_deadline_h", "max_active_per_user", "batch_days", "approval_required",
                     "qualification_required"):
            getattr(self, name).data = getattr(resource, name)
        for day in WEEKDAYS:
            getattr(self, f"hours_{day}").data = (resource.bookable_hours or {}).get(day, "")
        self.add_spec_rows(resource.specs or [])

    def add_spec_rows(self, specs: list[dict]) -> None:
        while self.specs.entries:
            self.specs.pop_entry()
        for spec in specs:
            self.specs.append_entry({k: spec.get(k, "") for k in ("key_zh", "key_en", "value")})
        for _ in range(self.BLANK_SPEC_ROWS):
            self.specs.append_entry({})

    def values(self) -> dict:
        """The fields as booking.catalog expects them."""
        values = {name: getattr(self, name).data for name in (
            "kind", "name_zh", "name_en", "model", "manufacturer", "original_value", "category", "operation_mode",
            "voucher_eligible", "status", "granularity_min", "min_duration_min", "max_duration_min",
            "lead_time_min", "horizon_days", "cancellation_deadline_h", "max_active_per_user", "batch_days",
            "approval_required", "qualification_required")}
        for name in ("name_zh", "name_en", "model", "manufacturer"):
            values[name] = (values[name] or "").strip()
        values["description_zh"] = (self.description_zh.data or "").strip()
        values["description_en"] = (self.description_en.data or "").strip()
        values["specs"] = [row for entry in self.specs if (row := entry.form.as_spec())]
        values["bookable_hours"] = {day: getattr(self, f"hours_{day}").data.strip() for day in WEEKDAYS
                                    if (getattr(self, f"hours_{day}").data or "").strip()}
        return values
