"""Platform administration: organisations (with their credit codes), users and facilities."""

from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, render_template, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from flask_wtf import FlaskForm
from sqlalchemy import func, select
from sqlalchemy.orm import selectinload
from wtforms import BooleanField, EmailField, SelectChoice, SelectField, StringField, TextAreaField, ValidationError
from wtforms.validators import DataRequired, Length

from booking import facilities as facility_services
from booking.hours import WEEKDAYS, parse_span
from booking.models import Facility, Resource
from core.accounts import registration, services
from core.accounts.models import Organisation, OrganisationKind, OrganisationStatus, Role, User
from core.accounts.registration import RegistrationDecided
from core.errors import DomainError, InvalidInput, NotFound
from core.regions import SICHUAN_CITIES
from core.timeutil import DEFAULT_TIMEZONE
from web.authz import roles_required
from web.database import get_db
from web.forms import apply_field_errors
from web.i18n import error_text

bp = Blueprint("admin", __name__, url_prefix="/admin")

KIND_NAMES = {OrganisationKind.UNIVERSITY: _l("University"), OrganisationKind.INSTITUTE: _l("Research institute"),
              OrganisationKind.ENTERPRISE: _l("Enterprise"), OrganisationKind.GOVERNMENT: _l("Government body")}


class OrganisationForm(FlaskForm):
    name_zh = StringField(_l("Organisation name (Chinese)"),
                          validators=[DataRequired(_l("Enter a name.")), Length(max=200)])
    name_en = StringField(_l("Organisation name (English)"),
                          validators=[DataRequired(_l("Enter a name.")), Length(max=200)])
    credit_code = StringField(_l("Unified social credit code"),
                              validators=[DataRequired(_l("Enter the credit code.")), Length(max=40)])
    kind = SelectField(_l("Kind"), choices=[SelectChoice(k.value, label) for k, label in KIND_NAMES.items()])
    city = SelectField(_l("City or prefecture"))
    tech_sme = BooleanField(_l("Tech-based SME (科技型中小企业)"))


class RejectRegistrationForm(FlaskForm):
    reason = TextAreaField(_l("Reason (the applicant reads it)"),
                           validators=[DataRequired(_l("Give a reason.")), Length(max=500)])


@bp.get("/users")
@roles_required(Role.ADMIN)
def users():
    db = get_db()
    rows = db.scalars(select(User).order_by(User.organisation_id, User.email)).all()
    return render_template("admin/users.html", users=rows)


def _organisation_form(**kwargs) -> OrganisationForm:
    from web.templating import current_locale

    form = OrganisationForm(**kwargs)
    index = 1 if current_locale() == "en" else 0
    form.city.choices = [SelectChoice(code, names[index]) for code, names in SICHUAN_CITIES.items()]
    return form


@bp.route("/organisations", methods=["GET", "POST"])
@roles_required(Role.ADMIN)
def organisations():
    db = get_db()
    form = _organisation_form()
    status = 200
    if form.validate_on_submit():
        data = services.OrganisationData(name_zh=form.name_zh.data, name_en=form.name_en.data,
                                         credit_code=form.credit_code.data, kind=form.kind.data,
                                         city=form.city.data, tech_sme=form.tech_sme.data)
        try:
            org = services.create_organisation(db, current_user, data)
        except InvalidInput as exc:
            db.rollback()
            apply_field_errors(form, exc)
            status = 422
        else:
            db.commit()
            flash(_("Organisation “%(name)s” has been registered.", name=org.name_zh), "success")
            return redirect(url_for(".organisations"))
    elif form.is_submitted():
        status = 422
    return _organisations_page(db, form, status=status)


def _organisations_page(db, form: OrganisationForm, *, status: int = 200, reject_forms: dict | None = None):
    user_counts = dict(db.execute(select(User.organisation_id, func.count()).group_by(User.organisation_id)).all())
    rows = db.scalars(select(Organisation).where(Organisation.status != OrganisationStatus.PENDING)
                      .order_by(Organisation.kind, Organisation.id)).all()
    pending = registration.pending_registrations(db)
    reject_forms = reject_forms or {}
    return render_template(
        "admin/organisations.html", organisations=rows, form=form, kind_names=KIND_NAMES, user_counts=user_counts,
        pending=[(org, registration.applicants_of(db, org),
                  reject_forms.get(org.id) or RejectRegistrationForm(formdata=None, prefix=f"reject-{org.id}"))
                 for org in pending],
        approve_form=FlaskForm(formdata=None), status_labels=STATUS_LABELS), status


STATUS_LABELS = {OrganisationStatus.PENDING: _l("Waiting for approval"), OrganisationStatus.APPROVED: _l("Approved"),
                 OrganisationStatus.REJECTED: _l("Rejected")}


def _decision_failed(exc: DomainError):
    get_db().rollback()
    flash(error_text(exc), "danger")
    return redirect(url_for(".organisations"))


@bp.post("/organisations/<int:org_id>/approve")
@roles_required(Role.ADMIN)
def approve_organisation(org_id: int):
    db = get_db()  # the form's CSRF token is checked by CSRFProtect before this runs
    try:
        org = registration.approve_registration(db, current_user, org_id)
    except (RegistrationDecided, NotFound) as exc:
        return _decision_failed(exc)
    db.commit()
    flash(_("“%(name)s” is approved; its users can sign in now and have been told by e-mail.",
            name=org.name_zh), "success")
    return redirect(url_for(".organisations"))


@bp.post("/organisations/<int:org_id>/reject")
@roles_required(Role.ADMIN)
def reject_organisation(org_id: int):
    db = get_db()
    form = RejectRegistrationForm(prefix=f"reject-{org_id}")
    if form.validate_on_submit():
        try:
            org = registration.reject_registration(db, current_user, org_id, form.reason.data)
        except InvalidInput as exc:
            db.rollback()
            apply_field_errors(form, exc)
        except (RegistrationDecided, NotFound) as exc:
            return _decision_failed(exc)
        else:
            db.commit()
            flash(_("“%(name)s” is rejected; the applicant has been told why by e-mail.", name=org.name_zh), "info")
            return redirect(url_for(".organisations"))
    return _organisations_page(db, _organisation_form(formdata=None), status=422, reject_forms={org_id: form})


# --- facilities ------------------------------------------------------------------------------------------

WEEKDAY_NAMES = {"mon": _l("Monday"), "tue": _l("Tuesday"), "wed": _l("Wednesday"), "thu": _l("Thursday"),
                 "fri": _l("Friday"), "sat": _l("Saturday"), "sun": _l("Sunday")}


def _opening_span(form, field) -> None:
    if field.data and field.data.strip():
        try:
            parse_span(field.data)
        except ValueError:
            raise ValidationError(_l("Enter hours as HH:MM-HH:MM, or leave empty if closed.")) from None


class FacilityForm(FlaskForm):
    name_zh = StringField(_l("Facility name (Chinese)"),
                          validators=[DataRequired(_l("Enter a name.")), Length(max=200)])
    name_en = StringField(_l("Facility name (English)"),
                          validators=[DataRequired(_l("Enter a name.")), Length(max=200)])
    owner_id = SelectField(_l("Owner organisation"), coerce=int)
    city = SelectField(_l("City or prefecture"))
    address_zh = StringField(_l("Address (Chinese)"), validators=[Length(max=300)])
    address_en = StringField(_l("Address (English)"), validators=[Length(max=300)])
    timezone = StringField(_l("Time zone"), default=DEFAULT_TIMEZONE,
                           validators=[DataRequired(_l("Enter a time zone."))])
    hours_mon = StringField(WEEKDAY_NAMES["mon"], validators=[_opening_span])
    hours_tue = StringField(WEEKDAY_NAMES["tue"], validators=[_opening_span])
    hours_wed = StringField(WEEKDAY_NAMES["wed"], validators=[_opening_span])
    hours_thu = StringField(WEEKDAY_NAMES["thu"], validators=[_opening_span])
    hours_fri = StringField(WEEKDAY_NAMES["fri"], validators=[_opening_span])
    hours_sat = StringField(WEEKDAY_NAMES["sat"], validators=[_opening_span])
    hours_sun = StringField(WEEKDAY_NAMES["sun"], validators=[_opening_span])

    def values(self) -> dict:
        names = ("name_zh", "name_en", "owner_id", "city", "address_zh", "address_en", "timezone")
        values = {name: getattr(self, name).data for name in names}
        values["opening_hours"] = {day: getattr(self, f"hours_{day}").data.strip() for day in WEEKDAYS
                                   if (getattr(self, f"hours_{day}").data or "").strip()}
        return values


class ManagerForm(FlaskForm):
    email = EmailField(_l("E-mail address"), validators=[DataRequired(_l("Enter an e-mail address."))])


def _facility_form(db, facility: Facility | None = None, *, from_request: bool = True) -> FacilityForm:
    """The facility form, filled from the request or (from_request=False, or on GET) from `facility`."""
    from web.templating import current_locale

    form = FacilityForm(obj=facility) if from_request else FacilityForm(formdata=None, obj=facility)
    if facility is not None and not (from_request and form.is_submitted()):
        for day in WEEKDAYS:
            getattr(form, f"hours_{day}").data = (facility.opening_hours or {}).get(day, "")
    index = 1 if current_locale() == "en" else 0
    form.city.choices = [SelectChoice(code, names[index]) for code, names in SICHUAN_CITIES.items()]
    organisations = db.scalars(select(Organisation).order_by(Organisation.id)).all()
    name_of = (lambda o: o.name_en or o.name_zh) if index else (lambda o: o.name_zh)
    form.owner_id.choices = [SelectChoice(org.id, name_of(org)) for org in organisations]
    return form


def _hours_field_errors(form: FacilityForm, error: InvalidInput) -> None:
    """The service names opening_hours as a whole; the form shows it next to the weekday fields."""
    messages = error.fields.pop("opening_hours", None)
    if messages:
        error.fields["hours_mon"] = messages
    apply_field_errors(form, error)


@bp.route("/facilities", methods=["GET", "POST"])
@roles_required(Role.ADMIN)
def facilities():
    db = get_db()
    form = _facility_form(db)
    status = 200
    if form.validate_on_submit():
        try:
            facility = facility_services.create_facility(db, current_user, form.values())
        except InvalidInput as exc:
            db.rollback()
            _hours_field_errors(form, exc)
            status = 422
        else:
            db.commit()
            flash(_("Facility “%(name)s” has been created.", name=facility.name_zh), "success")
            return redirect(url_for(".edit_facility", facility_id=facility.id))
    elif form.is_submitted():
        status = 422
    rows = db.scalars(select(Facility).options(selectinload(Facility.managers)).order_by(Facility.id)).all()
    resource_counts = dict(db.execute(select(Resource.facility_id, func.count()).group_by(Resource.facility_id)).all())
    return render_template("admin/facilities.html", facilities=rows, form=form, weekdays=WEEKDAYS,
                           resource_counts=resource_counts), status


def _edit_page(db, facility: Facility, form: FacilityForm, manager_form: ManagerForm, status: int = 200):
    return render_template("admin/facility_edit.html", facility=facility, form=form, manager_form=manager_form,
                           weekdays=WEEKDAYS, managers=sorted(facility.managers, key=lambda u: u.email),
                           remove_form=FlaskForm()), status


def _facility_or_404(db, facility_id: int) -> Facility:
    facility = db.get(Facility, facility_id)
    if facility is None:
        abort(404)
    return facility


@bp.route("/facilities/<int:facility_id>/edit", methods=["GET", "POST"])
@roles_required(Role.ADMIN)
def edit_facility(facility_id: int):
    db = get_db()
    facility = _facility_or_404(db, facility_id)
    form = _facility_form(db, facility)
    status = 200
    if form.validate_on_submit():
        try:
            facility_services.update_facility(db, current_user, facility_id, form.values())
        except InvalidInput as exc:
            db.rollback()
            facility = _facility_or_404(db, facility_id)
            _hours_field_errors(form, exc)
            status = 422
        else:
            db.commit()
            flash(_("The facility has been saved."), "success")
            return redirect(url_for(".edit_facility", facility_id=facility_id))
    elif form.is_submitted():
        status = 422
    return _edit_page(db, facility, form, ManagerForm(formdata=None), status)


@bp.post("/facilities/<int:facility_id>/managers")
@roles_required(Role.ADMIN)
def add_facility_manager(facility_id: int):
    db = get_db()
    facility = _facility_or_404(db, facility_id)
    manager_form = ManagerForm()
    if manager_form.validate_on_submit():
        email = manager_form.email.data.strip().lower()
        user = db.scalar(select(User).where(User.email == email))
        if user is None:
            manager_form.email.errors = [_("No user has this e-mail address.")]
        else:
            added = facility_services.assign_manager(db, current_user, facility_id, user)
            db.commit()
            if added:
                flash(_("%(name)s now manages this facility.", name=user.name_zh), "success")
            else:
                flash(_("%(name)s already manages this facility.", name=user.name_zh), "info")
            return redirect(url_for(".edit_facility", facility_id=facility_id))
    return _edit_page(db, facility, _facility_form(db, facility, from_request=False), manager_form, 422)


@bp.post("/facilities/<int:facility_id>/managers/<int:user_id>/remove")
@roles_required(Role.ADMIN)
def remove_facility_manager(facility_id: int, user_id: int):
    db = get_db()
    _facility_or_404(db, facility_id)  # the form's CSRF token is checked by CSRFProtect before this runs
    if facility_services.remove_manager(db, current_user, facility_id, user_id):
        db.commit()
        flash(_("The manager has been removed from this facility."), "success")
    return redirect(url_for(".edit_facility", facility_id=facility_id))
