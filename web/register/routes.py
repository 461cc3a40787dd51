"""The public registration page: an organisation registers itself with its first user and waits for a platform
admin's approval (core.accounts.registration). CSRF-protected like every form, and rate-limited per client
address."""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque

from flask import Blueprint, current_app, redirect, render_template, request, session, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import BooleanField, EmailField, PasswordField, SelectChoice, SelectField, StringField
from wtforms.validators import DataRequired, EqualTo, Length

from core.accounts.passwords import MAX_PASSWORD_LENGTH, MIN_PASSWORD_LENGTH
from core.accounts.registration import RegistrationData, register_organisation
from core.accounts.services import normalise_email
from core.errors import InvalidInput
from core.regions import SICHUAN_CITIES
from web.admin.routes import KIND_NAMES
from web.database import get_db
from web.forms import apply_field_errors
from web.i18n import LANGUAGE_NAMES, SUPPORTED_LOCALES
from web.templating import current_locale

bp = Blueprint("register", __name__)

# Submissions one client address may make per window; each web process counts its own (a limiter shared by
# all workers belongs in the proxy in front, e.g. nginx limit_req).
DEFAULT_LIMIT = (10, 3600.0)


class RecentAttempts:
    """A sliding-window counter per key, in memory."""

    def __init__(self, limit: int, window_s: float):
        self.limit, self.window_s = limit, window_s
        self._hits: dict[str, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    def allow(self, key: str, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        with self._lock:
            hits = self._hits[key]
            while hits and hits[0] <= now - self.window_s:
                hits.popleft()
            if len(hits) >= self.limit:
                return False
            hits.append(now)
            return True


@bp.record_once
def _init_limiter(state) -> None:
    limit, window_s = state.app.config.get("LABSHARE_REGISTRATION_LIMIT", DEFAULT_LIMIT)
    state.app.extensions["labshare.registration_attempts"] = RecentAttempts(limit, window_s)


class RegistrationForm(FlaskForm):
    name_zh = StringField(_l("Organisation name (Chinese)"),
                          validators=[DataRequired(_l("Enter a name.")), Length(max=200)])
    name_en = StringField(_l("Organisation name (English)"),
                          validators=[DataRequired(_l("Enter a name.")), Length(max=200)])
    credit_code = StringField(_l("Unified social credit code"),
                              validators=[DataRequired(_l("Enter the credit code.")), Length(max=40)])
    kind = SelectField(_l("Kind"), choices=[SelectChoice(k.value, label) for k, label in KIND_NAMES.items()])
    city = SelectField(_l("City or prefecture"))
    tech_sme = BooleanField(_l("Tech-based SME (科技型中小企业)"))
    user_name_zh = StringField(_l("Your name (Chinese)"),
                               validators=[DataRequired(_l("Enter your name.")), Length(max=100)])
    user_name_en = StringField(_l("Your name (English, optional)"), validators=[Length(max=100)])
    email = EmailField(_l("E-mail"), validators=[DataRequired(_l("Enter your e-mail address.")), Length(max=254)])
    password = PasswordField(_l("Password"), validators=[DataRequired(_l("Choose a password.")),
                                                         Length(max=MAX_PASSWORD_LENGTH)])
    password_again = PasswordField(_l("Password again"), validators=[
        DataRequired(_l("Enter the password again.")), EqualTo("password", _l("The two passwords differ."))])
    locale = SelectField(_l("Language of e-mails and pages"),
                         choices=[SelectChoice(code, LANGUAGE_NAMES[code]) for code in SUPPORTED_LOCALES])

    def data_for_service(self) -> RegistrationData:
        return RegistrationData(
            name_zh=self.name_zh.data or "", name_en=self.name_en.data or "", credit_code=self.credit_code.data or "",
            kind=self.kind.data, city=self.city.data, tech_sme=bool(self.tech_sme.data),
            user_name_zh=self.user_name_zh.data or "", user_name_en=self.user_name_en.data or "",
            email=self.email.data or "", password=self.password.data or "", locale=self.locale.data)


def _form() -> RegistrationForm:
    form = RegistrationForm()
    index = 1 if current_locale() == "en" else 0
    form.city.choices = [SelectChoice(code, names[index]) for code, names in SICHUAN_CITIES.items()]
    if not form.is_submitted():
        form.locale.data = current_locale()
    return form


@bp.route("/register", methods=["GET", "POST"])
def register():
    form = _form()
    status = 200
    if form.is_submitted():
        status = 422
        attempts: RecentAttempts = current_app.extensions["labshare.registration_attempts"]
        if not attempts.allow(request.remote_addr or "unknown"):
            form.form_errors.append(_("Too many registrations from your network. Please try again in an hour."))
            return render_template("register/form.html", form=form, min_password=MIN_PASSWORD_LENGTH), 429
        if form.validate():
            db = get_db()
            try:
                org = register_organisation(db, None, form.data_for_service())
            except InvalidInput as exc:
                db.rollback()
                apply_field_errors(form, exc)
            else:
                db.commit()
                session["registered"] = {"organisation": org.name(current_locale()),
                                         "email": normalise_email(form.email.data)}
                return redirect(url_for(".registered"))
    return render_template("register/form.html", form=form, min_password=MIN_PASSWORD_LENGTH), status


@bp.get("/register/done")
def registered():
    details = session.pop("registered", None)
    if details is None:
        return redirect(url_for(".register"))
    return render_template("register/done.html", **details)
