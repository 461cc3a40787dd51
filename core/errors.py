"""Domain errors with stable codes.

Services raise these; the web layer and the CLI map them to status codes and translated messages in one
place. `message` is an English template marked for extraction; `params` fill it after translation.
"""

from __future__ import annotations

from typing import Any, ClassVar


def N_(message: str) -> str:
    """Mark a string for translation without translating it here (core imports no i18n machinery)."""
    return message


class Message(str):
    """An English message that remembers its template and parameters, so it can be translated later."""

    template: str
    params: dict[str, Any]

    def __new__(cls, template: str, **params: Any) -> Message:
        obj = super().__new__(cls, template % params if params else template)
        obj.template, obj.params = template, params
        return obj

    def translated(self, translate) -> str:
        text = translate(self.template)
        return text % self.params if self.params else text


def translate_message(message: str, translate) -> str:
    """A field or error message in the caller's language; `translate` is a gettext function."""
    if isinstance(message, Message):
        return message.translated(translate)
    return translate(message)


class DomainError(Exception):
    code = "domain_error"
    message = N_("The request could not be carried out.")

    def __init__(self, message: str | None = None, /, *, details: dict[str, Any] | None = None, **params: Any):
        if message is not None:
            self.message = message
        self.params = params
        self.details = details or {}
        super().__init__(self.render())

    def render(self, translate=lambda s: s) -> str:
        """The message in the caller's language; `translate` is a gettext function."""
        template = translate(self.message)
        if not self.params:
            return template
        return template % {k: v.translated(translate) if isinstance(v, Message) else v for k, v in self.params.items()}


# What NotFound calls the things it did not find, in words a user understands.
KIND_NAMES: dict[str, str] = {
    "user": N_("User"), "organisation": N_("Organisation"), "api_token": N_("API token"),
    "facility": N_("Facility"), "resource": N_("Resource"), "reservation": N_("Reservation"),
    "blackout": N_("Blackout"), "qualification": N_("Qualification"), "waitlist_entry": N_("Waitlist entry"),
    "sample_request": N_("Sample request"), "calendar_feed": N_("Calendar feed"), "photo": N_("Photo"),
    "device": N_("Device"), "usage_session": N_("Usage session"), "dead_letter": N_("Rejected message"),
    "rate_card": N_("Rate card"), "billing_period": N_("Billing period"), "charge": N_("Charge"),
    "charge_line": N_("Charge line"), "statement": N_("Statement"), "reconciliation_item": N_("Reconciliation item"),
    "voucher_programme": N_("Voucher programme"), "voucher": N_("Voucher"),
    "voucher_application": N_("Voucher application"), "voucher_claim": N_("Voucher claim"),
    "voucher_claim_item": N_("Claim item"),
}


class NotFound(DomainError):
    code = "not_found"
    message = N_("%(kind)s %(ident)s does not exist.")

    def __init__(self, kind: str, ident: object):
        label = Message(KIND_NAMES[kind]) if kind in KIND_NAMES else kind
        super().__init__(kind=label, ident=ident, details={"kind": kind, "id": str(ident)})


class Forbidden(DomainError):
    code = "forbidden"
    message = N_("You are not allowed to do this.")


class InvalidInput(DomainError):
    """Input that fails validation; `details["fields"]` maps field names to lists of messages."""

    code = "invalid_input"
    message = N_("Some values are not valid.")

    def __init__(self, fields: dict[str, list[str]] | None = None, message: str | None = None, **params: Any):
        super().__init__(message, details={"fields": fields or {}}, **params)
        self.fields = fields or {}


class Conflict(DomainError):
    code = "conflict"
    message = N_("This conflicts with existing data.")


class Unauthenticated(DomainError):
    code = "unauthorized"
    message = N_("Send an API token: Authorization: Bearer <token>.")


class InvalidCredentials(DomainError):
    code = "invalid_credentials"
    message = N_("The e-mail address or the password is wrong.")


class AccountDisabled(DomainError):
    code = "account_disabled"
    message = N_("This account is disabled.")


class InvalidToken(DomainError):
    """An API token that is malformed, unknown, revoked or whose account is disabled; `reason` says which."""

    code = "invalid_token"
    MESSAGES: ClassVar[dict[str, str]] = {
        "malformed": N_("The API token is malformed: it should start with lsk_ and have 47 characters."),
        "unknown": N_("The API token is not known."),
        "revoked": N_("The API token has been revoked."),
        "account_disabled": N_("The account this API token belongs to is disabled."),
    }

    def __init__(self, reason: str):
        super().__init__(self.MESSAGES[reason], details={"reason": reason})
        self.reason = reason
