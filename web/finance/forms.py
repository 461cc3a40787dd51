"""WTForms of the finance pages (every one carries the CSRF token through FlaskForm)."""

from __future__ import annotations

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import DecimalField, IntegerField, SelectChoice, SelectField, StringField, TextAreaField
from wtforms.validators import DataRequired, Length, NumberRange, Optional, Regexp

from billing.models import Resolution

GIVE_REASON = _l("Give a reason.")


class EmptyForm(FlaskForm):
    """A button that changes something: only the CSRF token is checked."""


class CreditNoteForm(FlaskForm):
    reason = TextAreaField(_l("Reason"), validators=[DataRequired(GIVE_REASON), Length(max=2000)])


class ResolveForm(FlaskForm):
    resolution = SelectField(_l("Decision"), choices=[
        SelectChoice(Resolution.ACCEPT.value, _l("Accept as reconciled")),
        SelectChoice(Resolution.WAIVE.value, _l("Waive (bill nothing)")),
        SelectChoice(Resolution.ADJUST.value, _l("Bill adjusted minutes")),
        SelectChoice(Resolution.ASSIGN.value, _l("Assign to an organisation"))])
    reason = StringField(_l("Reason"), validators=[Optional(), Length(max=2000)])
    adjusted_minutes = IntegerField(_l("Minutes to bill"), validators=[Optional(), NumberRange(min=0, max=527040)])
    org_id = SelectField(_l("Organisation to bill"), coerce=lambda v: int(v) if v not in (None, "", "None") else None,
                         validate_choice=False, validators=[Optional()])
    user_email = StringField(_l("User (e-mail, optional)"), validators=[Optional(), Length(max=254)])


class GrantVoucherForm(FlaskForm):
    programme_id = SelectField(_l("Programme"), coerce=int, validate_choice=False)
    holder_id = SelectField(_l("Holder"), coerce=int, validate_choice=False)
    amount = DecimalField(_l("Amount (CNY, optional: the programme's face value)"), places=2,
                          validators=[Optional(), NumberRange(min=0.01)])


class ClaimCreateForm(FlaskForm):
    programme_id = SelectField(_l("Programme"), coerce=int, validate_choice=False)
    month = StringField(_l("Period (YYYY-MM)"), validators=[DataRequired(), Regexp(r"^\d{4}-\d{2}$",
                                                                                   message=_l("Enter a month as "
                                                                                              "YYYY-MM."))])


class RejectForm(FlaskForm):
    reason = TextAreaField(_l("Reason for the rejection"), validators=[DataRequired(GIVE_REASON), Length(max=2000)])


class PaidForm(FlaskForm):
    payout_reference = StringField(_l("Bank reference of the payment"), validators=[DataRequired(), Length(max=64)])


class ReferencesForm(FlaskForm):
    invoice_number = StringField(_l("Invoice number"), validators=[Optional(), Length(max=64)])
    payment_reference = StringField(_l("Payment reference"), validators=[Optional(), Length(max=64)])
