"""Forms of the device registry pages. Ranges and formats are checked by devices.registry, whose messages
appear next to the fields; the forms only parse."""

from __future__ import annotations

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import HiddenField, IntegerField, SelectField, StringField, TextAreaField
from wtforms.validators import InputRequired

from devices.models import UsageSource
from web.booking.forms import INVALID_NUMBER, choices

USAGE_SOURCE_NAMES = {
    UsageSource.EVENTS.value: _l("Run events"),
    UsageSource.STATUS.value: _l("Status “running”"),
    UsageSource.POWER.value: _l("Power threshold"),
}
USAGE_SOURCE_CHOICES = choices(*USAGE_SOURCE_NAMES.items())


class DeviceForm(FlaskForm):
    """A new device. Field names are those of devices.registry.DeviceData, so its errors land on them."""

    resource_id = SelectField(_l("Resource"), choices=[], validate_choice=False)
    device_id = StringField(_l("Device id"))
    description = TextAreaField(_l("Description"))
    usage_source = SelectField(_l("Usage source"), choices=USAGE_SOURCE_CHOICES, default=UsageSource.STATUS.value,
                               validate_choice=False)
    power_threshold_w = StringField(_l("Power threshold (W)"))
    debounce_s = IntegerField(_l("Debounce (s)"), default=60,
                              validators=[InputRequired(_l("Enter a whole number."))],
                              invalid_value_message=INVALID_NUMBER)
    heartbeat_timeout_s = IntegerField(_l("Heartbeat timeout (s)"), default=300,
                                       validators=[InputRequired(_l("Enter a whole number."))],
                                       invalid_value_message=INVALID_NUMBER)


class DeviceActionForm(FlaskForm):
    """A button that changes a device (CSRF token only); `next` is the list page to return to."""

    next = HiddenField()
