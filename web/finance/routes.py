"""Finance pages: closing a period against its reconciliation exceptions, statements with credit notes and
downloads, innovation voucher programmes with their burn-down, voucher claims; the lab managers' page that
resolves their facilities' exceptions; a researcher's charges and the cost estimate under the booking form."""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import date
from decimal import Decimal

from flask import Blueprint, Response, abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import current_user, login_required
from sqlalchemy import func, select
from wtforms import SelectChoice

from billing import claims as claim_service
from billing import exports, vouchers
from billing.charges import close_period, issue_credit_note
from billing.models import BillingPeriod, Charge, ChargeKind, ItemStatus, PeriodState, Statement
from billing.periods import current_month, find_period, parse_month
from billing.reconcile import list_items, reconcile_period, resolve_item
from billing.voucher_models import ClaimState, Voucher, VoucherApplication, VoucherClaim, VoucherProgramme
from booking.models import Facility, FacilityManager, Resource
from core.accounts.models import Organisation, OrganisationKind, Role, User
from core.errors import DomainError, InvalidInput, NotFound
from core.timeutil import DEFAULT_TIMEZONE, to_local, utcnow
from web.authz import roles_required
from web.database import get_db
from web.finance.estimate import estimate_booking
from web.finance.forms import (
    ClaimCreateForm,
    CreditNoteForm,
    EmptyForm,
    GrantVoucherForm,
    PaidForm,
    ReferencesForm,
    RejectForm,
    ResolveForm,
)
from web.forms import apply_field_errors
from web.i18n import error_text, field_errors
from web.templating import current_locale

bp = Blueprint("finance", __name__)

FINANCE = (Role.FINANCE, Role.ADMIN)
MANAGERS = (Role.LAB_MANAGER, Role.ADMIN)
ZERO = Decimal("0.00")
EXPORT_TYPES = {"csv": "text/csv; charset=utf-8",
                "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
                "pdf": "application/pdf"}


def kind_labels() -> dict[str, str]:
    return {"used": _("Used"), "no_show": _("No-show"), "overrun": _("Overrun"), "early_finish": _("Early finish"),
            "late_cancellation": _("Late cancellation"), "unbooked": _("Unbooked use")}


def resolution_labels() -> dict[str, str]:
    return {"accept": _("Accepted"), "waive": _("Waived"), "adjust": _("Adjusted"), "assign": _("Assigned")}


def claim_state_labels() -> dict[str, str]:
    return {"draft": _("Draft"), "submitted": _("Submitted"), "approved": _("Approved"), "rejected": _("Rejected"),
            "paid": _("Paid")}


CLAIM_STATE_TONES = {"draft": "secondary", "submitted": "info", "approved": "primary", "rejected": "danger",
                     "paid": "success"}


@bp.app_context_processor
def _finance_helpers():
    return {"cost_estimate": _cost_estimate, "claim_state_labels": claim_state_labels,
            "claim_state_tones": CLAIM_STATE_TONES}


def _cost_estimate(resource, starts_at, ends_at, sample_count=None):
    """For templates (the booking preview): the estimate, or None (no card, or not signed in)."""
    if not current_user.is_authenticated:
        return None
    return estimate_booking(get_db(), current_user, resource, starts_at, ends_at, sample_count)


def _failed(exc: DomainError, target: str):
    get_db().rollback()
    flash(error_text(exc), "danger")
    return redirect(target)


def _previous_month() -> str:
    this = current_month().first_day
    return f"{date(this.year - (this.month == 1), (this.month - 2) % 12 + 1, 1):%Y-%m}"


def _org_names(db, ids) -> dict[int, Organisation]:
    ids = set(ids)
    return {o.id: o for o in db.scalars(select(Organisation).where(Organisation.id.in_(ids)))} if ids else {}


def _coverage_by_charge(db, charge_ids) -> dict[int, Decimal]:
    if not charge_ids:
        return {}
    return dict(db.execute(select(VoucherApplication.charge_id, func.sum(VoucherApplication.amount))
                           .where(VoucherApplication.charge_id.in_(charge_ids))
                           .group_by(VoucherApplication.charge_id)).all())


# --- periods ---------------------------------------------------------------------------------------------------

@bp.get("/finance")
@roles_required(*FINANCE)
def index():
    return redirect(url_for(".period", month=_previous_month()))


@bp.get("/finance/periods/<month>")
@roles_required(*FINANCE)
def period(month: str):
    db = get_db()
    month_ = parse_month(month)
    found = find_period(db, month_)
    items = list_items(db, current_user, month_, limit=1000) if found else []
    exceptions = [i for i in items if i.status == ItemStatus.OPEN]
    facility_ids = {i.resource.facility_id for i in exceptions}
    managers: dict[int, list[User]] = defaultdict(list)
    if facility_ids:
        for facility_id, user in db.execute(select(FacilityManager.facility_id, User).join(
                User, User.id == FacilityManager.user_id).where(FacilityManager.facility_id.in_(facility_ids))):
            managers[facility_id].append(user)
    facilities = {f.id: f for f in db.scalars(select(Facility).where(Facility.id.in_(facility_ids)))} \
        if facility_ids else {}
    context = dict(month=month_.label, period=found, items=items, exceptions=exceptions, managers=managers,
                   facilities=facilities, by_kind=Counter(str(i.kind) for i in exceptions),
                   all_by_kind=Counter(str(i.kind) for i in items), kind_labels=kind_labels(),
                   resolution_labels=resolution_labels(), form=EmptyForm(formdata=None),
                   over=month_.is_over(utcnow()), previous=_shift(month_.first_day, -1),
                   next=_shift(month_.first_day, 1))
    if found is not None and found.state == PeriodState.CLOSED:
        statements = db.scalars(select(Statement).where(Statement.period_id == found.id)
                                .order_by(Statement.number)).all()
        counts = dict(db.execute(select(Charge.kind, func.count()).where(Charge.period_id == found.id)
                                 .group_by(Charge.kind)).all())
        context.update(statements=statements, orgs=_org_names(db, [s.organisation_id for s in statements]),
                       charge_count=counts.get(ChargeKind.CHARGE, 0),
                       credit_count=counts.get(ChargeKind.CREDIT_NOTE, 0),
                       statements_total=sum((s.total for s in statements), ZERO))
    return render_template("finance/period.html", **context)


def _shift(first_day: date, months: int) -> str:
    index = first_day.year * 12 + first_day.month - 1 + months
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


@bp.post("/finance/periods/<month>/reconcile")
@roles_required(*FINANCE)
def reconcile(month: str):
    db = get_db()
    target = url_for(".period", month=month)
    if not EmptyForm().validate_on_submit():
        abort(400)
    try:
        report = reconcile_period(db, current_user, month)
    except DomainError as exc:
        return _failed(exc, target)
    db.commit()
    flash(_("Reconciled: %(created)s new items, %(updated)s updated; %(open)s exceptions are open.",
            created=report.created, updated=report.updated, open=report.open_exceptions),
          "warning" if report.open_exceptions else "success")
    return redirect(target)


@bp.post("/finance/periods/<month>/close")
@roles_required(*FINANCE)
def close(month: str):
    db = get_db()
    target = url_for(".period", month=month)
    if not EmptyForm().validate_on_submit():
        abort(400)
    try:
        report = close_period(db, current_user, month)
    except DomainError as exc:
        return _failed(exc, target)
    db.commit()
    flash(_("The period %(month)s is closed: %(charges)s charges on %(statements)s statements, total %(total)s.",
            month=report.month, charges=report.charges, statements=report.statements,
            total=f"¥{report.total:,.2f}"), "success")
    return redirect(target)


# --- lab managers: their facilities' exceptions --------------------------------------------------------------

@bp.get("/manage/reconciliation")
@roles_required(*MANAGERS)
def reconciliation_index():
    return redirect(url_for(".reconciliation", month=_previous_month()))


def _resolve_form(prefix: str, formdata=None) -> ResolveForm:
    form = ResolveForm(prefix=prefix, formdata=formdata)
    form.org_id.choices = [SelectChoice("", "—")] + [SelectChoice(o.id, o.name(current_locale()))
                                         for o in get_db().scalars(select(Organisation).order_by(Organisation.name_zh))]
    return form


@bp.get("/manage/reconciliation/<month>")
@roles_required(*MANAGERS)
def reconciliation(month: str, forms: dict | None = None, status: int = 200):
    db = get_db()
    month_ = parse_month(month)
    items = list_items(db, current_user, month_, limit=1000)
    open_items = [i for i in items if i.status == ItemStatus.OPEN]
    resolved = [i for i in items if i.status != ItemStatus.OPEN and i.resolved_by_id is not None]
    blank = _resolve_form("blank")
    forms = forms or {}
    period_ = find_period(db, month_)
    orgs = _org_names(db, [i.assigned_org_id for i in items if i.assigned_org_id])
    return render_template("finance/reconciliation.html", month=month_.label, period=period_, open_items=open_items,
                           resolved=resolved, forms=forms, blank=blank, kind_labels=kind_labels(), orgs=orgs,
                           resolution_labels=resolution_labels(), previous=_shift(month_.first_day, -1),
                           next=_shift(month_.first_day, 1)), status


@bp.post("/manage/reconciliation/items/<int:item_id>/resolve")
@roles_required(*MANAGERS)
def resolve(item_id: int):
    db = get_db()
    month = request.form.get("month", "")
    form = _resolve_form(f"i{item_id}", request.form)
    target = url_for(".reconciliation", month=month) if month else url_for(".reconciliation_index")
    if not form.validate_on_submit():
        flash(" ".join(str(m) for messages in form.errors.values() for m in messages), "danger")
        return redirect(target)
    user_id = None
    if form.user_email.data:
        user = db.scalar(select(User).where(User.email == form.user_email.data.strip().lower()))
        if user is None:
            flash(_("There is no user with this e-mail address."), "danger")
            return redirect(target)
        user_id = user.id
    try:
        resolve_item(db, current_user, item_id, form.resolution.data, reason=form.reason.data or "",
                     adjusted_minutes=form.adjusted_minutes.data, org_id=form.org_id.data, user_id=user_id)
    except InvalidInput as exc:
        db.rollback()
        flash(" ".join(m for messages in field_errors(exc).values() for m in messages) or error_text(exc), "danger")
        return redirect(target)
    except DomainError as exc:
        return _failed(exc, target)
    db.commit()
    flash(_("The exception is resolved."), "success")
    return redirect(target)


# --- statements -------------------------------------------------------------------------------------------------

@bp.get("/finance/statements")
@roles_required(*FINANCE)
def statements():
    db = get_db()
    month = request.args.get("month") or _previous_month()
    month_ = parse_month(month)
    rows = db.execute(select(Statement, Organisation).join(Organisation, Organisation.id == Statement.organisation_id)
                      .join(BillingPeriod, BillingPeriod.id == Statement.period_id)
                      .where(BillingPeriod.month == month_.first_day).order_by(Statement.number)).all()
    coverage = dict(db.execute(
        select(Charge.statement_id, func.sum(VoucherApplication.amount))
        .join(Charge, Charge.id == VoucherApplication.charge_id)
        .where(Charge.statement_id.in_([s.id for s, _o in rows] or [-1])).group_by(Charge.statement_id)).all())
    return render_template("finance/statements.html", month=month_.label, rows=rows, coverage=coverage,
                           total=sum((s.total for s, _o in rows), ZERO),
                           previous=_shift(month_.first_day, -1), next=_shift(month_.first_day, 1))


def _visible_statement(statement_id: int) -> Statement:
    statement = get_db().get(Statement, statement_id)
    if statement is None:
        abort(404)
    if not (current_user.has_role(*FINANCE) or current_user.organisation_id == statement.organisation_id):
        abort(403)
    return statement


@bp.get("/finance/statements/<int:statement_id>")
@roles_required(*FINANCE)
def statement(statement_id: int, credit_forms: dict | None = None, status: int = 200):
    db = get_db()
    _visible_statement(statement_id)
    doc = exports.load_statement(db, statement_id, locale=current_locale())
    charges = {c.id: c for c in db.scalars(select(Charge).where(Charge.statement_id == statement_id))}
    credited = set(db.scalars(select(Charge.credit_of_id).where(Charge.credit_of_id.in_(list(charges) or [-1]))))
    groups: dict[int, list] = defaultdict(list)
    for line in doc.lines:
        groups[line.charge_id].append(line)
    forms = {cid: CreditNoteForm(prefix=f"c{cid}", formdata=None) for cid in charges}
    forms.update(credit_forms or {})
    return render_template("finance/statement.html", doc=doc, charges=charges, groups=groups, credited=credited,
                           forms=forms, labels=exports.labels(current_locale()),
                           quantity_text=exports.quantity_text), status


@bp.get("/statements/<int:statement_id>/download.<fmt>")
@login_required
def statement_download(statement_id: int, fmt: str):
    """Finance, admins, and the users of the statement's organisation."""
    if fmt not in EXPORT_TYPES:
        abort(404)
    _visible_statement(statement_id)
    doc = exports.load_statement(get_db(), statement_id, locale=current_locale())
    body = {"csv": exports.statement_csv, "xlsx": exports.statement_xlsx, "pdf": exports.statement_pdf}[fmt](doc)
    return _download(body, fmt, f"{doc.number}.{fmt}")


def _download(body: bytes, fmt: str, filename: str) -> Response:
    response = Response(body, mimetype=EXPORT_TYPES[fmt].split(";")[0], content_type=EXPORT_TYPES[fmt])
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


@bp.post("/finance/charges/<int:charge_id>/credit-note")
@roles_required(*FINANCE)
def credit_note(charge_id: int):
    db = get_db()
    charge = db.get(Charge, charge_id)
    if charge is None:
        abort(404)
    form = CreditNoteForm(prefix=f"c{charge_id}")
    back = url_for(".statement", statement_id=charge.statement_id) if charge.statement_id else \
        url_for(".statements")
    if not form.validate_on_submit():
        if charge.statement_id:
            return statement(charge.statement_id, {charge_id: form}, 422)
        flash(_("Give a reason."), "danger")
        return redirect(back)
    try:
        credit = issue_credit_note(db, current_user, charge_id, form.reason.data)
    except InvalidInput as exc:
        db.rollback()
        apply_field_errors(form, exc)
        return statement(charge.statement_id, {charge_id: form}, 422) if charge.statement_id else redirect(back)
    except DomainError as exc:
        return _failed(exc, back)
    db.commit()
    flash(_("Credit note %(id)s issued for %(amount)s; it will appear on the organisation's next statement.",
            id=credit.id, amount=f"¥{credit.total:,.2f}"), "success")
    return redirect(back)


# --- vouchers ---------------------------------------------------------------------------------------------------

def _grant_form(formdata=None) -> GrantVoucherForm:
    db = get_db()
    form = GrantVoucherForm(formdata=formdata)
    locale = current_locale()
    form.programme_id.choices = [SelectChoice(p.id, f"{p.name(locale)} ({p.code})") for p in db.scalars(
        select(VoucherProgramme).where(VoucherProgramme.active.is_(True)).order_by(VoucherProgramme.id))]
    form.holder_id.choices = [SelectChoice(o.id, o.name(locale)) for o in db.scalars(
        select(Organisation).where(Organisation.kind == OrganisationKind.ENTERPRISE).order_by(Organisation.name_zh))]
    return form


def burn_down_chart(programmes: list, applied: list[tuple[int, date, Decimal]], today: date) -> dict:
    """ECharts option: per programme, the cumulative subsidy applied by day, from zero on the day the programme
    was created to today (a step line), with the budget in the series name."""
    by_programme: dict[int, dict[date, Decimal]] = defaultdict(dict)
    for programme_id, day, amount in applied:
        by_programme[programme_id][day] = by_programme[programme_id].get(day, ZERO) + amount
    series = []
    for programme in programmes:
        days = by_programme.get(programme.id, {})
        if not days:
            continue
        first = min([*days, programme.created_at.date()]) if getattr(programme, "created_at", None) else min(days)
        running, points = ZERO, [[first.isoformat(), "0.00"]]
        for day in sorted(days):
            running += days[day]
            points.append([day.isoformat(), str(running)])
        if max(days) < today:
            points.append([today.isoformat(), str(running)])
        series.append({"name": _("%(code)s (budget %(budget)s)", code=programme.code,
                                  budget=f"¥{programme.budget:,.0f}"),
                       "type": "line", "step": "end", "showSymbol": True, "areaStyle": {"opacity": 0.15},
                       "data": points})
    return {"tooltip": {"trigger": "axis"}, "legend": {"bottom": 0},
            "grid": {"left": 70, "right": 30, "top": 30, "bottom": 50},
            "xAxis": {"type": "time"}, "yAxis": {"type": "value", "name": "CNY"}, "series": series}


@bp.get("/finance/vouchers")
@roles_required(*FINANCE)
def voucher_overview(form: GrantVoucherForm | None = None, status: int = 200):
    db = get_db()
    programmes = db.scalars(select(VoucherProgramme).order_by(VoucherProgramme.year.desc(),
                                                              VoucherProgramme.id)).all()
    applied = [(pid, to_local(when, DEFAULT_TIMEZONE).date(), amount) for pid, when, amount in db.execute(
        select(VoucherApplication.programme_id, VoucherApplication.applied_at, VoucherApplication.amount)
        .order_by(VoucherApplication.applied_at))]
    rows = db.execute(select(Voucher, Organisation).join(Organisation, Organisation.id == Voucher.holder_id)
                      .order_by(Voucher.valid_until, Voucher.id).limit(500)).all()
    summaries = [(vouchers.summarise(db, voucher), holder) for voucher, holder in rows]
    return render_template("finance/vouchers.html", programmes=programmes, summaries=summaries,
                           burn_down=burn_down_chart(programmes, applied, vouchers.today()),
                           form=form or _grant_form()), status


@bp.post("/finance/vouchers/grant")
@roles_required(*FINANCE)
def grant():
    db = get_db()
    form = _grant_form(request.form)
    if not form.validate_on_submit():
        return voucher_overview(form, 422)
    try:
        voucher = vouchers.grant_voucher(db, current_user, form.programme_id.data, form.holder_id.data,
                                         amount=form.amount.data)
    except InvalidInput as exc:
        db.rollback()
        apply_field_errors(form, exc)
        if not exc.fields:
            form.form_errors.append(error_text(exc))
        return voucher_overview(form, 422)
    except DomainError as exc:
        return _failed(exc, url_for(".voucher_overview"))
    db.commit()
    flash(_("Voucher %(number)s granted: %(amount)s, valid until %(until)s.", number=voucher.number,
            amount=f"¥{voucher.amount:,.2f}", until=voucher.valid_until.isoformat()), "success")
    return redirect(url_for(".voucher_overview"))


# --- claims -----------------------------------------------------------------------------------------------------

def _claim_form(formdata=None) -> ClaimCreateForm:
    form = ClaimCreateForm(formdata=formdata)
    if formdata is None:
        form.month.data = _previous_month()
    locale = current_locale()
    form.programme_id.choices = [SelectChoice(p.id, f"{p.name(locale)} ({p.code})") for p in get_db().scalars(
        select(VoucherProgramme).order_by(VoucherProgramme.id))]
    return form


@bp.get("/finance/claims")
@roles_required(*FINANCE)
def claims(form: ClaimCreateForm | None = None, status: int = 200):
    db = get_db()
    rows = db.execute(select(VoucherClaim, Organisation, BillingPeriod)
                      .join(Organisation, Organisation.id == VoucherClaim.claimant_id)
                      .join(BillingPeriod, BillingPeriod.id == VoucherClaim.period_id)
                      .order_by(VoucherClaim.created_at.desc(), VoucherClaim.id.desc()).limit(500)).all()
    rows = [row for row in rows if claim_service.can_see_claim(current_user, row[0])]
    return render_template("finance/claims.html", rows=rows, form=form or _claim_form(),
                           missing={c.id: claim_service.missing_evidence(c) for c, _o, _p in rows}), status


@bp.post("/finance/claims")
@roles_required(*FINANCE)
def create_claim():
    db = get_db()
    form = _claim_form(request.form)
    if not form.validate_on_submit():
        return claims(form, 422)
    try:
        period_ = find_period(db, parse_month(form.month.data))
        if period_ is None:
            raise NotFound("billing_period", form.month.data)
        claim = claim_service.create_claim(db, current_user, form.programme_id.data, period_.id)
    except InvalidInput as exc:
        db.rollback()
        apply_field_errors(form, exc)
        if not exc.fields:
            form.form_errors.append(error_text(exc))
        return claims(form, 422)
    except DomainError as exc:
        return _failed(exc, url_for(".claims"))
    db.commit()
    flash(_("Claim %(id)s drafted with %(n)s items.", id=claim.id, n=len(claim.items)), "success")
    return redirect(url_for(".claim", claim_id=claim.id))


def _visible_claim(claim_id: int) -> VoucherClaim:
    try:
        return claim_service.get_claim(get_db(), current_user, claim_id)
    except NotFound:
        abort(404)


@bp.get("/finance/claims/<int:claim_id>")
@roles_required(*FINANCE)
def claim(claim_id: int, reject_form: RejectForm | None = None, status: int = 200):
    db = get_db()
    claim_ = _visible_claim(claim_id)
    doc = exports.load_claim(db, claim_id, locale=current_locale())
    return render_template(
        "finance/claim.html", claim=claim_, doc=doc, missing=claim_service.missing_evidence(claim_),
        can_decide=vouchers.can_administer(current_user, claim_.programme),
        can_edit=claim_.state == ClaimState.DRAFT and claim_service._may_act_for(
            current_user, claim_.claimant_id, claim_.mode),
        form=EmptyForm(formdata=None), reject_form=reject_form or RejectForm(formdata=None),
        paid_form=PaidForm(formdata=None), reference_forms={i.id: ReferencesForm(
            prefix=f"r{i.id}", formdata=None, invoice_number=i.invoice_number, payment_reference=i.payment_reference)
            for i in claim_.items},
        labels=exports.labels(current_locale())), status


def _transition(claim_id: int, action, done: str):
    db = get_db()
    target = url_for(".claim", claim_id=claim_id)
    try:
        action(db)
    except DomainError as exc:
        db.rollback()
        message = error_text(exc)
        missing = exc.details.get("missing") if isinstance(exc.details, dict) else None
        if missing:
            message += " " + "; ".join(f"#{m['item_id']}: {', '.join(m['missing'])}" for m in missing)
        flash(message, "danger")
        return redirect(target)
    db.commit()
    flash(done, "success")
    return redirect(target)


@bp.post("/finance/claims/<int:claim_id>/submit")
@roles_required(*FINANCE)
def submit_claim(claim_id: int):
    if not EmptyForm().validate_on_submit():
        abort(400)
    return _transition(claim_id, lambda db: claim_service.submit_claim(db, current_user, claim_id),
                       _("The claim is submitted; it can no longer be changed."))


@bp.post("/finance/claims/<int:claim_id>/approve")
@roles_required(*FINANCE)
def approve_claim(claim_id: int):
    if not EmptyForm().validate_on_submit():
        abort(400)
    return _transition(claim_id, lambda db: claim_service.approve_claim(db, current_user, claim_id),
                       _("The claim is approved."))


@bp.post("/finance/claims/<int:claim_id>/reject")
@roles_required(*FINANCE)
def reject_claim(claim_id: int):
    form = RejectForm()
    if not form.validate_on_submit():
        _visible_claim(claim_id)
        return claim(claim_id, form, 422)
    return _transition(claim_id, lambda db: claim_service.reject_claim(db, current_user, claim_id, form.reason.data),
                       _("The claim is rejected."))


@bp.post("/finance/claims/<int:claim_id>/paid")
@roles_required(*FINANCE)
def mark_paid(claim_id: int):
    form = PaidForm()
    if not form.validate_on_submit():
        flash(_("Give the bank reference of the payment (at most 64 characters)."), "danger")
        return redirect(url_for(".claim", claim_id=claim_id))
    return _transition(claim_id, lambda db: claim_service.mark_claim_paid(db, current_user, claim_id,
                                                                          form.payout_reference.data),
                       _("The claim is marked as paid."))


@bp.post("/finance/claims/items/<int:item_id>/references")
@roles_required(*FINANCE)
def item_references(item_id: int):
    db = get_db()
    form = ReferencesForm(prefix=f"r{item_id}")
    claim_id = request.form.get("claim_id", type=int) or 0
    if not form.validate_on_submit():
        flash(_("Give at most 64 characters."), "danger")
        return redirect(url_for(".claim", claim_id=claim_id))
    return _transition(claim_id, lambda db_: claim_service.set_item_references(
        db, current_user, item_id, invoice_number=form.invoice_number.data or "",
        payment_reference=form.payment_reference.data or ""), _("The references are saved."))


@bp.post("/finance/claims/items/<int:item_id>/confirm")
@roles_required(*FINANCE)
def confirm_item(item_id: int):
    claim_id = request.form.get("claim_id", type=int) or 0
    if not EmptyForm().validate_on_submit():
        abort(400)
    return _transition(claim_id, lambda db: claim_service.confirm_item(db, current_user, item_id),
                       _("Your side of the service confirmation is recorded."))


def _claim_points(claim_: VoucherClaim) -> dict | None:
    """The telemetry points of every measured session of the claim, from the time-series store; None (with a
    message flashed) when the store cannot be read."""
    from billing.evidence import flatten
    from telemetry.tsdb import StoreError
    from web.live.routes import time_series_store

    try:
        store = time_series_store()
        return {session_id: flatten((p.ts_ns, p.fields) for p in store.query(w.device_id, w.start_ns, w.end_ns))
                for session_id, w in claim_service.evidence_windows(claim_).items()}
    except (StoreError, ValueError) as exc:
        flash(_("The time-series store cannot be read now: %(error)s", error=str(exc)), "danger")
        return None


@bp.post("/finance/claims/<int:claim_id>/evidence")
@roles_required(*FINANCE)
def record_evidence(claim_id: int):
    """Digest the telemetry of every measured session of the draft, read from the time-series store."""
    if not EmptyForm().validate_on_submit():
        abort(400)
    points = _claim_points(_visible_claim(claim_id))
    if points is None:
        return redirect(url_for(".claim", claim_id=claim_id))
    return _transition(claim_id, lambda db: claim_service.record_evidence(db, current_user, claim_id, points),
                       _("The telemetry digests are recorded."))


@bp.post("/finance/claims/<int:claim_id>/verify")
@roles_required(*FINANCE)
def verify_evidence(claim_id: int):
    """Read the telemetry again and compare it with the digests recorded in the claim."""
    if not EmptyForm().validate_on_submit():
        abort(400)
    claim_ = _visible_claim(claim_id)
    target = url_for(".claim", claim_id=claim_id)
    points = _claim_points(claim_)
    if points is None:
        return redirect(target)
    mismatches = claim_service.verify_claim_evidence(get_db(), claim_, points)
    if not mismatches:
        flash(_("The telemetry still matches every recorded digest."), "success")
    else:
        flash(_("The telemetry no longer matches the recorded digests: %(sessions)s.", sessions=", ".join(
            f"#{m.usage_session_id} ({m.recorded_count} → {m.actual_count})" for m in mismatches)), "danger")
    return redirect(target)


@bp.get("/finance/claims/<int:claim_id>/download.<fmt>")
@roles_required(*FINANCE)
def claim_download(claim_id: int, fmt: str):
    if fmt not in EXPORT_TYPES:
        abort(404)
    _visible_claim(claim_id)
    doc = exports.load_claim(get_db(), claim_id, locale=current_locale())
    body = {"csv": exports.claim_csv, "xlsx": exports.claim_xlsx, "pdf": exports.claim_pdf}[fmt](doc)
    return _download(body, fmt, f"claim-{claim_id}.{fmt}")


# --- a researcher's charges ----------------------------------------------------------------------------------

@bp.get("/account/charges")
@login_required
def my_charges():
    db = get_db()
    org_id = current_user.organisation_id
    rows = db.execute(select(Charge, Resource, BillingPeriod).join(Resource, Resource.id == Charge.resource_id)
                      .join(BillingPeriod, BillingPeriod.id == Charge.period_id)
                      .where(Charge.organisation_id == org_id)
                      .order_by(Charge.service_date.desc(), Charge.id.desc()).limit(500)).all()
    coverage = _coverage_by_charge(db, [c.id for c, _r, _p in rows])
    statements_ = db.execute(select(Statement, BillingPeriod).join(BillingPeriod)
                             .where(Statement.organisation_id == org_id).order_by(Statement.number.desc())).all()
    summaries = vouchers.vouchers_of(db, org_id, include_expired=False)
    return render_template("finance/my_charges.html", rows=rows, coverage=coverage, statements=statements_,
                           vouchers=summaries, total=sum((c.total for c, _r, _p in rows), ZERO),
                           covered=sum(coverage.values(), ZERO))
