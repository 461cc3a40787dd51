"""The GET forms of the report pages: which days, which facilities, how grouped and sorted (no CSRF: they
change nothing)."""

from __future__ import annotations

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import DateField, IntegerField, SelectChoice, SelectField
from wtforms.validators import NumberRange, Optional

from reports.sharing import MAX_RANGE_DAYS

FIRST_YEAR, LAST_YEAR = 2000, 2100
GROUPS = ("instrument", "facility", "organisation", "city")
SORT_KEYS = ("name", "effective", "external", "rate", "income", "external_income", "voucher", "users",
             "organisations", "no_show", "idle")
INVALID_DATE = _l("Enter a date as YYYY-MM-DD.")


class RangeForm(FlaskForm):
    """A year (the current one runs to today) or a custom range of days, and optional facility and city."""

    class Meta:
        csrf = False

    year = IntegerField(_l("Year"), validators=[Optional(), NumberRange(
        min=FIRST_YEAR, max=LAST_YEAR, message=_l("Choose a year between 2000 and 2100."))],
                        invalid_value_message=_l("Enter a year such as 2026."))
    start = DateField(_l("From"), validators=[Optional()], invalid_value_message=INVALID_DATE)
    end = DateField(_l("To"), validators=[Optional()], invalid_value_message=INVALID_DATE)
    facility = IntegerField(_l("Facility"), validators=[Optional()],
                            invalid_value_message=_l("Choose a facility from the list."))
    owner = IntegerField(_l("Owning unit"), validators=[Optional()],
                         invalid_value_message=_l("Choose an organisation from the list."))
    city = SelectField(_l("City"), choices=[], validate_choice=False)

    def validate(self, extra_validators=None) -> bool:
        valid = super().validate(extra_validators)
        for field in self:  # a choice outside the list (a hand-made URL) is an error, not an empty report
            if isinstance(field, SelectField) and field.data and field.data not in {c.value for c in field.choices}:
                field.errors = [*field.errors, _l("Choose a value from the list.")]
                valid = False
        if not valid:
            return False
        if self.year.data is not None:  # a year wins over the dates
            return True
        if (self.start.data is None) != (self.end.data is None):
            (self.end if self.start.data else self.start).errors.append(
                _l("Give both the first and the last day, or choose a year."))
            return False
        if self.start.data and self.end.data:
            if self.end.data < self.start.data:
                self.end.errors.append(_l("The end must not be before the start."))
                return False
            if (self.end.data - self.start.data).days >= MAX_RANGE_DAYS:
                self.end.errors.append(_l("A report covers at most five years."))
                return False
        return True


class ReportForm(RangeForm):
    group = SelectField(_l("Group by"), choices=[SelectChoice(g, g) for g in GROUPS], validate_choice=False)
    sort = SelectField(_l("Sort by"), choices=[SelectChoice(k, k) for k in SORT_KEYS], validate_choice=False)
    dir = SelectField(_l("Order"), choices=[SelectChoice("desc", "desc"), SelectChoice("asc", "asc")],
                      validate_choice=False)
    page = IntegerField(_l("Page"), validators=[Optional(), NumberRange(min=1, max=100000)],
                        invalid_value_message=_l("Enter a whole number."))
