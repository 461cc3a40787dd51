"""Sign in, sign out, and the language switch."""

from __future__ import annotations

from flask import Blueprint, flash, make_response, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user, login_user, logout_user
from flask_wtf import FlaskForm
from wtforms import BooleanField, EmailField, HiddenField, PasswordField
from wtforms.validators import DataRequired, Length

from core.accounts.services import authenticate
from core.errors import AccountDisabled, InvalidCredentials
from web.database import get_db
from web.errors import error_page
from web.forms import safe_next
from web.i18n import LOCALE_COOKIE, SUPPORTED_LOCALES, error_text

bp = Blueprint("auth", __name__)


class LoginForm(FlaskForm):
    email = EmailField(_l("E-mail"), validators=[DataRequired(_l("Enter your e-mail address.")), Length(max=254)])
    password = PasswordField(_l("Password"), validators=[DataRequired(_l("Enter your password.")),
                                                         Length(max=256)])
    remember = BooleanField(_l("Keep me signed in on this computer"))
    next = HiddenField()


@bp.route("/login", methods=["GET", "POST"])
def login():
    if current_user.is_authenticated:
        return redirect(url_for("home.index"))
    form = LoginForm(next=request.args.get("next", ""))
    if form.validate_on_submit():
        db = get_db()
        try:
            user = authenticate(db, form.email.data, form.password.data)
        except (InvalidCredentials, AccountDisabled) as exc:
            db.rollback()
            form.form_errors.append(error_text(exc))
            return render_template("auth/login.html", form=form), 401
        db.commit()
        login_user(user, remember=form.remember.data)
        response = redirect(safe_next(form.next.data, url_for("home.index")))
        response.set_cookie(LOCALE_COOKIE, user.locale, max_age=365 * 86400, samesite="Lax")
        return response
    status = 422 if form.is_submitted() else 200
    return render_template("auth/login.html", form=form), status


@bp.post("/logout")
def logout():
    logout_user()
    flash(_("You have signed out."), "info")
    return redirect(url_for("auth.login"))


@bp.post("/language")
def set_language():
    locale = request.form.get("locale", "")
    if locale not in SUPPORTED_LOCALES:
        return error_page(400, _("Unknown language. Choose 中文 or English."))
    if current_user.is_authenticated:
        db = get_db()
        current_user.locale = locale  # loaded through this request's session, so this is a tracked change
        db.commit()
    response = make_response(redirect(safe_next(request.form.get("next"), url_for("home.index"))))
    response.set_cookie(LOCALE_COOKIE, locale, max_age=365 * 86400, samesite="Lax")
    return response
