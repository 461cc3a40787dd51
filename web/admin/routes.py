"""Platform administration: organisations (with their credit codes) and users."""

from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from flask_wtf import FlaskForm
from sqlalchemy import func, select
from wtforms import BooleanField, SelectChoice, SelectField, StringField
from wtforms.validators import DataRequired, Length

from core.accounts import services
from core.accounts.models import Organisation, OrganisationKind, Role, User
from core.errors import InvalidInput
from core.regions import SICHUAN_CITIES
from web.authz import roles_required
from web.database import get_db
from web.forms import apply_field_errors

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


@bp.get("/users")
@roles_required(Role.ADMIN)
def users():
    db = get_db()
    rows = db.scalars(select(User).order_by(User.organisation_id, User.email)).all()
    return render_template("admin/users.html", users=rows)


@bp.route("/organisations", methods=["GET", "POST"])
@roles_required(Role.ADMIN)
def organisations():
    db = get_db()
    form = OrganisationForm()
    from web.templating import current_locale

    index = 1 if current_locale() == "en" else 0
    form.city.choices = [SelectChoice(code, names[index]) for code, names in SICHUAN_CITIES.items()]
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
    user_counts = dict(db.execute(select(User.organisation_id, func.count()).group_by(User.organisation_id)).all())
    rows = db.scalars(select(Organisation).order_by(Organisation.kind, Organisation.id)).all()
    return render_template("admin/organisations.html", organisations=rows, form=form, kind_names=KIND_NAMES,
                           user_counts=user_counts), status
