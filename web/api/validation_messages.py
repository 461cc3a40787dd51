"""The fixed messages marshmallow and our schemas give for bad API input, marked for translation.

web/errors.py translates each message under `details.fields` through the catalog; messages with numbers
in them (ranges, lengths) stay in English.
"""

from core.errors import N_

MESSAGES = (
    N_("Missing data for required field."),
    N_("Unknown field."),
    N_("Field may not be null."),
    N_("Invalid input type."),
    N_("Invalid value."),
    N_("Not a valid integer."),
    N_("Not a valid number."),
    N_("Not a valid boolean."),
    N_("Not a valid string."),
    N_("Not a valid datetime."),
    N_("Not a valid aware datetime."),
    N_("Not a valid mapping type."),
    N_("Not a valid list."),
    N_("Must be one of the allowed values."),
    N_("Give both ends of the window or neither."),
    N_("The end must be after the start."),
    N_("At most 62 days at a time."),
    N_("Give starts_at and ends_at, or purpose."),
    N_("This field is required."),
)
