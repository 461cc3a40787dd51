"""The signed-in user's own account: profile, language, password and API tokens."""

from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user, login_required
from flask_wtf import FlaskForm
from wtforms import PasswordField, SelectChoice, SelectField, StringField
from wtforms.validators import DataRequired, Length

from core.accounts import services, tokens
from core.errors import DomainError, InvalidInput
from web.database import get_db
from web.forms import apply_field_errors
from web.i18n import LANGUAGE_NAMES, LOCALE_COOKIE, error_text

bp = Blueprint("account", __name__, url_prefix="/account")


class ProfileForm(FlaskForm):
    name_zh = StringField(_l("Name (Chinese)"), validators=[DataRequired(_l("Enter your name.")), Length(max=100)])
    name_en = StringField(_l("Name (English)"), validators=[Length(max=100)])
    locale = SelectField(_l("Language"), choices=[SelectChoice(code, name) for code, name in LANGUAGE_NAMES.items()])


class PasswordForm(FlaskForm):
    current_password = PasswordField(_l("Current password"), validators=[DataRequired(_l("Enter your password."))])
    new_password = PasswordField(_l("New password"), validators=[DataRequired(_l("Enter a new password."))])


class TokenForm(FlaskForm):
    name = StringField(_l("Token name"), validators=[DataRequired(_l("Give the token a name.")), Length(max=100)])


@bp.route("/profile", methods=["GET", "POST"])
@login_required
def profile():
    db = get_db()
    form = ProfileForm(obj=current_user)
    password_form = PasswordForm(prefix="pw")
    status = 200
    if form.validate_on_submit():
        try:
            services.update_profile(db, current_user, name_zh=form.name_zh.data, name_en=form.name_en.data or "",
                                    locale=form.locale.data)
        except InvalidInput as exc:
            db.rollback()
            apply_field_errors(form, exc)
            status = 422
        else:
            db.commit()
            flash(_("Your profile has been saved."), "success")
            response = redirect(url_for(".profile"))
            response.set_cookie(LOCALE_COOKIE, current_user.locale, max_age=365 * 86400, samesite="Lax")
            return response
    elif form.is_submitted():
        status = 422
    return render_template("account/profile.html", form=form, password_form=password_form), status


@bp.post("/password")
@login_required
def change_password():
    db = get_db()
    form = ProfileForm(obj=current_user, formdata=None)
    password_form = PasswordForm(prefix="pw")
    if password_form.validate_on_submit():
        try:
            services.change_password(db, current_user, current=password_form.current_password.data,
                                     new=password_form.new_password.data)
        except InvalidInput as exc:
            db.rollback()
            apply_field_errors(password_form, exc)
        else:
            db.commit()
            flash(_("Your password has been changed."), "success")
            return redirect(url_for(".profile"))
    return render_template("account/profile.html", form=form, password_form=password_form), 422


@bp.route("/tokens", methods=["GET", "POST"])
@login_required
def api_tokens():
    db = get_db()
    form = TokenForm()
    new_secret = None
    status = 200
    if form.validate_on_submit():
        try:
            _token, new_secret = tokens.create_token(db, current_user, current_user, form.name.data)
        except InvalidInput as exc:
            db.rollback()
            apply_field_errors(form, exc)
            status = 422
        else:
            db.commit()
            form = TokenForm(formdata=None)
    elif form.is_submitted():
        status = 422
    return render_template("account/tokens.html", form=form, tokens=tokens.tokens_of(db, current_user),
                           new_secret=new_secret), status


@bp.post("/tokens/<int:token_id>/revoke")
@login_required
def revoke_token(token_id: int):
    db = get_db()
    try:
        token = tokens.revoke_token(db, current_user, token_id)
    except DomainError as exc:
        db.rollback()
        flash(error_text(exc), "danger")
        return redirect(url_for(".api_tokens"))
    db.commit()
    flash(_("Token “%(name)s” has been revoked.", name=token.name), "success")
    return redirect(url_for(".api_tokens"))
