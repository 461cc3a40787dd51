"""Errors of the billing area (rate cards, reconciliation, periods, charges), each with a stable code."""

from __future__ import annotations

from core.errors import N_, Conflict


class RateCardOverlap(Conflict):
    """Two rate cards of one resource would be valid on the same day; `details` names the other card."""

    code = "rate_card_overlap"
    message = N_("This rate card's validity overlaps rate card %(other)s (valid from %(start)s to %(end)s).")


class MissingRateCard(Conflict):
    """Something must be billed on a day for which its resource has no rate card; `details["missing"]` lists them."""

    code = "missing_rate_card"
    message = N_("%(count)s billable items have no rate card valid on their service date, for example resource "
                 "%(resource)s on %(date)s.")


class PeriodClosed(Conflict):
    code = "period_closed"
    message = N_("The billing period %(month)s is closed; corrections are made with credit notes.")


class PeriodNotOver(Conflict):
    code = "period_not_over"
    message = N_("The billing period %(month)s has not ended yet.")


class UnresolvedExceptions(Conflict):
    """Reconciliation exceptions of the period wait for a lab manager; `details["item_ids"]` lists some."""

    code = "unresolved_exceptions"
    message = N_("%(count)s reconciliation exceptions of %(month)s are not resolved yet; lab managers must "
                 "resolve them before the period can be closed.")


class AlreadyCredited(Conflict):
    code = "already_credited"
    message = N_("Charge %(charge)s has already been reversed by a credit note.")


class SubsidisedCharge(Conflict):
    code = "subsidised_charge"
    message = N_("Charge %(charge)s is partly paid by an innovation voucher; a credit note would leave the subsidy "
                 "behind, so it cannot be reversed here. Settle it with the voucher programme first.")


class NotCreditable(Conflict):
    code = "not_creditable"
    message = N_("Only charges can be reversed, not credit notes.")
