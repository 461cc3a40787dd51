"""API: rate cards, reconciliation and its exceptions, closing a period, charges and credit notes, statements
(JSON, CSV, XLSX, PDF) and voucher claims with their way draft → submitted → approved/rejected → paid.
Thin: schema in, service call, schema out; the services decide who may do what."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from flask import Response
from flask.views import MethodView
from sqlalchemy import func, select

from billing import claims as claim_service
from billing import exports
from billing.charges import close_period, issue_credit_note
from billing.models import BillingPeriod, Charge, ItemStatus, RateCard, Statement
from billing.periods import find_period, parse_month
from billing.rate_cards import RateCardData, create_rate_card, end_rate_card
from billing.reconcile import count_open, list_items, reconcile_period, resolve_item
from billing.voucher_models import ClaimState, VoucherApplication, VoucherClaim
from booking.models import Resource
from core.accounts.models import Role, User
from core.errors import Forbidden, NotFound
from web.api.auth import current_api_user
from web.api.billing_schemas import (
    ChargeQuery,
    ChargeSchema,
    ClaimCreate,
    ClaimDetailSchema,
    ClaimQuery,
    ClaimSchema,
    CloseReportSchema,
    CreditNoteCreate,
    ExportQuery,
    PaidSchema,
    RateCardCreate,
    RateCardEnd,
    RateCardSchema,
    ReconciliationItemSchema,
    ReconciliationQuery,
    ReconciliationSchema,
    RejectSchema,
    ResolveSchema,
    StatementDetailSchema,
    StatementQuery,
    StatementSchema,
)
from web.api.blueprint import blp
from web.api.schemas import page_of
from web.database import get_db

ZERO = Decimal("0.00")
FINANCE = (Role.FINANCE, Role.ADMIN)
EXPORT_TYPES = {"csv": "text/csv; charset=utf-8",
                "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
                "pdf": "application/pdf"}
EXPORT_DOC = {"responses": {"200": {"description": "the document as a download", "content": {
    media.split(";")[0]: {"schema": {"type": "string", "format": "binary"}} for media in EXPORT_TYPES.values()}}}}


class _With:
    """A row with a few computed attributes added for its output schema."""

    def __init__(self, obj: Any, **extra: Any):
        self._obj = obj
        self.__dict__.update(extra)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._obj, name)


def _is_finance(user: User) -> bool:
    return user.has_role(*FINANCE)


def _org_scope(user: User, organisation_id: int | None) -> int | None:
    """The organisation to list for: finance and admins any (None = all), everyone else only their own."""
    if _is_finance(user):
        return organisation_id
    if organisation_id is not None and organisation_id != user.organisation_id:
        raise Forbidden()
    return user.organisation_id


def _page(query, args, wrap) -> dict:
    db = get_db()
    total = db.scalar(select(func.count()).select_from(query.order_by(None).subquery()))
    page, per_page = args["page"], args["per_page"]
    rows = db.execute(query.limit(per_page).offset((page - 1) * per_page)).all()
    return {"items": wrap(rows), "page": page, "per_page": per_page, "total": total}


def _coverage(charge_ids: list[int]) -> dict[int, Decimal]:
    if not charge_ids:
        return {}
    return dict(get_db().execute(select(VoucherApplication.charge_id, func.sum(VoucherApplication.amount))
                                 .where(VoucherApplication.charge_id.in_(charge_ids))
                                 .group_by(VoucherApplication.charge_id)).all())


def _charges_out(rows) -> list[_With]:
    coverage = _coverage([charge.id for charge, _month in rows])
    return [_With(charge, period_month=f"{month:%Y-%m}", voucher_coverage=coverage.get(charge.id, ZERO),
                  net=charge.total - coverage.get(charge.id, ZERO)) for charge, month in rows]


def _download(body: bytes, fmt: str, filename: str) -> Response:
    response = Response(body, content_type=EXPORT_TYPES[fmt])
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


# --- rate cards --------------------------------------------------------------------------------------------------

@blp.route("/resources/<id:resource_id>/rate-cards")
class RateCards(MethodView):
    @blp.response(200, RateCardSchema(many=True))
    def get(self, resource_id: int):
        """The resource's rate cards, oldest validity first (prices are public to signed-in users)."""
        db = get_db()
        if db.get(Resource, resource_id) is None:
            raise NotFound("resource", resource_id)
        return db.scalars(select(RateCard).where(RateCard.resource_id == resource_id).order_by(RateCard.valid_from))

    @blp.arguments(RateCardCreate)
    @blp.response(201, RateCardSchema)
    @blp.alt_response(409, description="rate_card_overlap: another card is valid on some of these days")
    def post(self, body, resource_id: int):
        """A new rate card (lab managers of the resource's facility, finance, admins)."""
        db = get_db()
        card = create_rate_card(db, current_api_user(), resource_id, RateCardData(**body))
        db.commit()
        return card


@blp.route("/rate-cards/<id:rate_card_id>/end")
class RateCardEnding(MethodView):
    @blp.arguments(RateCardEnd)
    @blp.response(200, RateCardSchema)
    def post(self, body, rate_card_id: int):
        """Set the last day a card is valid, to make room for its successor."""
        db = get_db()
        card = end_rate_card(db, current_api_user(), rate_card_id, body["valid_to"])
        db.commit()
        return card


# --- periods and reconciliation ---------------------------------------------------------------------------------

def _period_out(month: str, period: BillingPeriod | None) -> dict:
    return {"month": month, "state": period.state.value if period else "not_started",
            "reconciled_at": period.reconciled_at if period else None,
            "closed_at": period.closed_at if period else None}


@blp.route("/periods/<month>/reconciliation")
class Reconciliation(MethodView):
    @blp.arguments(ReconciliationQuery, location="query")
    @blp.response(200, ReconciliationSchema)
    def get(self, args, month: str):
        """The month's reconciliation items (`YYYY-MM`): finance and admins see all, lab managers their
        facilities'. `status=open` lists the exceptions that block closing."""
        db, user = get_db(), current_api_user()
        if not user.has_role(Role.FINANCE, Role.ADMIN, Role.LAB_MANAGER):
            raise Forbidden()
        month_ = parse_month(month)
        period = find_period(db, month_)
        status = ItemStatus(args["status"]) if args.get("status") else None
        items = list_items(db, user, month_, status=status, limit=5000) if period else []
        return {"period": _period_out(month_.label, period), "items": items,
                "open_exceptions": count_open(db, period) if period else 0}


@blp.route("/periods/<month>/reconcile")
class Reconcile(MethodView):
    @blp.response(200, ReconciliationSchema)
    @blp.alt_response(409, description="period_closed")
    def post(self, month: str):
        """Reconcile the month now (finance, admins): bookings paired with measured use; resolved items kept."""
        db, user = get_db(), current_api_user()
        reconcile_period(db, user, month)
        db.commit()
        month_ = parse_month(month)
        period = find_period(db, month_)
        return {"period": _period_out(month_.label, period), "items": list_items(db, user, month_, limit=5000),
                "open_exceptions": count_open(db, period)}


@blp.route("/reconciliation-items/<id:item_id>/resolve")
class ResolveItem(MethodView):
    @blp.arguments(ResolveSchema)
    @blp.response(200, ReconciliationItemSchema)
    def post(self, body, item_id: int):
        """A lab manager of the resource's facility (or an admin) decides an item: accept, waive (reason),
        adjust (reason, adjusted_minutes) or assign (org_id, optional user_id)."""
        db = get_db()
        item = resolve_item(db, current_api_user(), item_id, body["resolution"], reason=body["reason"],
                            adjusted_minutes=body.get("adjusted_minutes"), org_id=body.get("org_id"),
                            user_id=body.get("user_id"))
        db.commit()
        return item


@blp.route("/periods/<month>/close")
class ClosePeriod(MethodView):
    @blp.response(200, CloseReportSchema)
    @blp.alt_response(409, description="unresolved_exceptions, period_not_over, period_closed or "
                                       "missing_rate_card; nothing has changed")
    def post(self, month: str):
        """Close the month (finance, admins): charges for every item, one numbered statement per organisation."""
        db = get_db()
        report = close_period(db, current_api_user(), month)
        db.commit()
        return report


# --- charges and statements ----------------------------------------------------------------------------------

@blp.route("/charges")
class Charges(MethodView):
    @blp.arguments(ChargeQuery, location="query")
    @blp.response(200, page_of(ChargeSchema))
    def get(self, args):
        """Charges and credit notes with their lines and voucher coverage. Finance and admins see every
        organisation's (filter with `organisation_id`); everyone else their own organisation's."""
        user = current_api_user()
        org_id = _org_scope(user, args.get("organisation_id"))
        query = (select(Charge, BillingPeriod.month).join(BillingPeriod, BillingPeriod.id == Charge.period_id)
                 .order_by(Charge.service_date.desc(), Charge.id.desc()))
        if org_id is not None:
            query = query.where(Charge.organisation_id == org_id)
        if args.get("month"):
            query = query.where(BillingPeriod.month == parse_month(args["month"]).first_day)
        return _page(query, args, _charges_out)


@blp.route("/charges/<id:charge_id>/credit-note")
class CreditNote(MethodView):
    @blp.arguments(CreditNoteCreate)
    @blp.response(201, ChargeSchema)
    @blp.alt_response(409, description="already_credited, not_creditable")
    def post(self, body, charge_id: int):
        """Reverse a charge in full (finance, admins); the credit note lands in the current open period."""
        db = get_db()
        credit = issue_credit_note(db, current_api_user(), charge_id, body["reason"])
        db.commit()
        month = db.scalar(select(BillingPeriod.month).where(BillingPeriod.id == credit.period_id))
        return _charges_out([(credit, month)])[0]


def _statements_out(rows) -> list[_With]:
    ids = [s.id for s, _m in rows]
    coverage = dict(get_db().execute(
        select(Charge.statement_id, func.sum(VoucherApplication.amount))
        .join(Charge, Charge.id == VoucherApplication.charge_id)
        .where(Charge.statement_id.in_(ids or [-1])).group_by(Charge.statement_id)).all())
    return [_With(s, month=f"{m:%Y-%m}", voucher_coverage=coverage.get(s.id, ZERO),
                  net=s.total - coverage.get(s.id, ZERO)) for s, m in rows]


def _visible_statement(statement_id: int) -> Statement:
    user = current_api_user()
    statement = get_db().get(Statement, statement_id)
    if statement is None or not (_is_finance(user) or statement.organisation_id == user.organisation_id):
        raise NotFound("statement", statement_id)
    return statement


@blp.route("/statements")
class Statements(MethodView):
    @blp.arguments(StatementQuery, location="query")
    @blp.response(200, page_of(StatementSchema))
    def get(self, args):
        """Statements, newest first: finance and admins every organisation's, everyone else their own's."""
        org_id = _org_scope(current_api_user(), args.get("organisation_id"))
        query = (select(Statement, BillingPeriod.month).join(BillingPeriod, BillingPeriod.id == Statement.period_id)
                 .order_by(BillingPeriod.month.desc(), Statement.number))
        if org_id is not None:
            query = query.where(Statement.organisation_id == org_id)
        if args.get("month"):
            query = query.where(BillingPeriod.month == parse_month(args["month"]).first_day)
        return _page(query, args, _statements_out)


@blp.route("/statements/<id:statement_id>")
class StatementById(MethodView):
    @blp.response(200, StatementDetailSchema)
    def get(self, statement_id: int):
        """One statement with every line, its voucher coverage and net amount."""
        statement = _visible_statement(statement_id)
        doc = exports.load_statement(get_db(), statement_id, locale=current_api_user().locale)
        return _With(statement, month=doc.month, organisation=doc.organisation, credit_code=doc.credit_code,
                     facilities=list(doc.facilities), lines=list(doc.lines), voucher_coverage=doc.voucher_total,
                     net=doc.net_total)


@blp.route("/statements/<id:statement_id>/export")
class StatementExport(MethodView):
    @blp.arguments(ExportQuery, location="query")
    @blp.doc(**EXPORT_DOC)
    def get(self, args, statement_id: int):
        """The statement as `format=csv` (UTF-8 with BOM), `xlsx` or a printable `pdf`."""
        _visible_statement(statement_id)
        doc = exports.load_statement(get_db(), statement_id, locale=args["locale"])
        fmt = args["format"]
        body = {"csv": exports.statement_csv, "xlsx": exports.statement_xlsx, "pdf": exports.statement_pdf}[fmt](doc)
        return _download(body, fmt, f"{doc.number}.{fmt}")


# --- claims ---------------------------------------------------------------------------------------------------

def _claim_out(claim: VoucherClaim, month=None) -> _With:
    if month is None:
        month = get_db().scalar(select(BillingPeriod.month).where(BillingPeriod.id == claim.period_id))
    return _With(claim, period_month=f"{month:%Y-%m}", missing=claim_service.missing_evidence(claim))


@blp.route("/claims")
class Claims(MethodView):
    @blp.arguments(ClaimQuery, location="query")
    @blp.response(200, page_of(ClaimSchema))
    def get(self, args):
        """The voucher claims you may see: your organisation's, and those of programmes you administer."""
        db, user = get_db(), current_api_user()
        query = (select(VoucherClaim, BillingPeriod.month).join(BillingPeriod)
                 .order_by(VoucherClaim.created_at.desc(), VoucherClaim.id.desc()))
        if args.get("state"):
            query = query.where(VoucherClaim.state == ClaimState(args["state"]))
        rows = [(c, m) for c, m in db.execute(query) if claim_service.can_see_claim(user, c)]
        page, per_page = args["page"], args["per_page"]
        chosen = rows[(page - 1) * per_page:page * per_page]
        return {"items": [_claim_out(c, m) for c, m in chosen], "page": page, "per_page": per_page,
                "total": len(rows)}

    @blp.arguments(ClaimCreate)
    @blp.response(201, ClaimDetailSchema)
    @blp.alt_response(422, description="nothing_to_claim or invalid input")
    def post(self, body):
        """Draft a claim of every unclaimed subsidy of the programme and month for the claimant (your
        organisation by default): the provider in 通兑 mode, the holder in 通用 mode."""
        db = get_db()
        period = find_period(db, parse_month(body["month"]))
        if period is None:
            raise NotFound("billing_period", body["month"])
        claim = claim_service.create_claim(db, current_api_user(), body["programme_id"], period.id,
                                           claimant_id=body.get("claimant_id"))
        db.commit()
        return _claim_out(claim)


@blp.route("/claims/<id:claim_id>")
class ClaimById(MethodView):
    @blp.response(200, ClaimDetailSchema)
    def get(self, claim_id: int):
        """One claim with its items and their evidence."""
        return _claim_out(claim_service.get_claim(get_db(), current_api_user(), claim_id))


def _transition(action, claim_id: int, *args) -> _With:
    db = get_db()
    claim = action(db, current_api_user(), claim_id, *args)
    db.commit()
    return _claim_out(claim)


@blp.route("/claims/<id:claim_id>/submit")
class SubmitClaim(MethodView):
    @blp.response(200, ClaimDetailSchema)
    @blp.alt_response(409, description="invalid_claim_transition")
    @blp.alt_response(422, description="claim_incomplete (details.missing), claim_deadline_passed")
    def post(self, claim_id: int):
        """Submit a complete draft (its claimant); from then on it is frozen."""
        return _transition(claim_service.submit_claim, claim_id)


@blp.route("/claims/<id:claim_id>/approve")
class ApproveClaim(MethodView):
    @blp.response(200, ClaimDetailSchema)
    @blp.alt_response(409, description="invalid_claim_transition")
    def post(self, claim_id: int):
        """Approve a submitted claim (the programme's administrators)."""
        return _transition(claim_service.approve_claim, claim_id)


@blp.route("/claims/<id:claim_id>/reject")
class RejectClaim(MethodView):
    @blp.arguments(RejectSchema)
    @blp.response(200, ClaimDetailSchema)
    @blp.alt_response(409, description="invalid_claim_transition")
    def post(self, body, claim_id: int):
        """Reject a submitted claim with a reason (the programme's administrators)."""
        return _transition(claim_service.reject_claim, claim_id, body["reason"])


@blp.route("/claims/<id:claim_id>/mark-paid")
class PayClaim(MethodView):
    @blp.arguments(PaidSchema)
    @blp.response(200, ClaimDetailSchema)
    @blp.alt_response(409, description="invalid_claim_transition")
    def post(self, body, claim_id: int):
        """Record the programme's payment of an approved claim (the programme's administrators)."""
        return _transition(claim_service.mark_claim_paid, claim_id, body["payout_reference"])


@blp.route("/claims/<id:claim_id>/export")
class ClaimExport(MethodView):
    @blp.arguments(ExportQuery, location="query")
    @blp.doc(**EXPORT_DOC)
    def get(self, args, claim_id: int):
        """The claim as `format=csv`, `xlsx`, or `pdf` (the evidence pack: items, reservations, measured sessions
        with their SHA-256 digests, invoice and payment references, confirmations)."""
        claim_service.get_claim(get_db(), current_api_user(), claim_id)
        doc = exports.load_claim(get_db(), claim_id, locale=args["locale"])
        fmt = args["format"]
        body = {"csv": exports.claim_csv, "xlsx": exports.claim_xlsx, "pdf": exports.claim_pdf}[fmt](doc)
        return _download(body, fmt, f"claim-{claim_id}.{fmt}")

