"""API: who am I, my tokens, organisations and facilities (which admins create and edit)."""

from __future__ import annotations

from flask.views import MethodView
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from booking import facilities
from booking.models import Facility
from booking.permissions import managed_facility_ids
from core.accounts import tokens
from core.accounts.models import Organisation, Role, User
from core.errors import Forbidden, NotFound
from web.api.auth import current_api_user
from web.api.blueprint import blp
from web.api.pagination import paginate
from web.api.schemas import (
    FacilityCreate,
    FacilitySchema,
    FacilityUpdate,
    MeSchema,
    NewTokenSchema,
    OrganisationQuery,
    OrganisationSchema,
    PageQuery,
    TokenCreate,
    TokenSchema,
    page_of,
)
from web.database import get_db


@blp.route("/me")
class Me(MethodView):
    @blp.response(200, MeSchema)
    def get(self):
        """The user the token belongs to, with roles and managed facilities."""
        user = current_api_user()
        scope = managed_facility_ids(get_db(), user)
        return {"id": user.id, "email": user.email, "name_zh": user.name_zh, "name_en": user.name_en,
                "locale": user.locale, "roles": sorted(user.roles), "organisation": user.organisation,
                "managed_facility_ids": None if scope is None else sorted(scope)}


@blp.route("/tokens")
class Tokens(MethodView):
    @blp.response(200, TokenSchema(many=True))
    def get(self):
        """The caller's API tokens (secrets are never shown again)."""
        return tokens.tokens_of(get_db(), current_api_user())

    @blp.arguments(TokenCreate)
    @blp.response(201, NewTokenSchema)
    def post(self, body):
        """Create a token; the secret is in this response only."""
        db = get_db()
        user = current_api_user()
        token, secret = tokens.create_token(db, user, user, body["name"])
        db.commit()
        # raw values, not TokenSchema().dump(token): the response schema serialises them (only once)
        return {**{name: getattr(token, name) for name in TokenSchema().fields}, "token": secret}


@blp.route("/tokens/<id:token_id>")
class TokenById(MethodView):
    @blp.response(204)
    def delete(self, token_id: int):
        """Revoke a token (it stops working at once)."""
        db = get_db()
        tokens.revoke_token(db, current_api_user(), token_id)
        db.commit()


@blp.route("/organisations")
class Organisations(MethodView):
    @blp.arguments(OrganisationQuery, location="query")
    @blp.response(200, page_of(OrganisationSchema))
    def get(self, args):
        """Registered organisations (universities, institutes, enterprises)."""
        query = select(Organisation).order_by(Organisation.id)
        for field in ("kind", "city", "tech_sme"):
            if field in args:
                query = query.where(getattr(Organisation, field) == args[field])
        return paginate(get_db(), query, args["page"], args["per_page"])


@blp.route("/facilities")
class Facilities(MethodView):
    @blp.arguments(PageQuery, location="query")
    @blp.response(200, page_of(FacilitySchema))
    def get(self, args):
        """Facilities (sites) that host instruments and pilot lines."""
        query = select(Facility).options(selectinload(Facility.managers)).order_by(Facility.id)
        return paginate(get_db(), query, args["page"], args["per_page"])

    @blp.arguments(FacilityCreate)
    @blp.response(201, FacilitySchema)
    def post(self, body):
        """Create a facility (admins only)."""
        db = get_db()
        facility = facilities.create_facility(db, current_api_user(), body)
        db.commit()
        return facility


@blp.route("/facilities/<id:facility_id>")
class FacilityById(MethodView):
    @blp.response(200, FacilitySchema)
    def get(self, facility_id: int):
        """One facility with its opening hours and managers."""
        return facilities.get_facility(get_db(), facility_id)

    @blp.arguments(FacilityUpdate)
    @blp.response(200, FacilitySchema)
    def patch(self, body, facility_id: int):
        """Change a facility's names, owner, city, address, time zone or opening hours (admins only)."""
        db = get_db()
        facility = facilities.update_facility(db, current_api_user(), facility_id, body)
        db.commit()
        return facility


@blp.route("/facilities/<id:facility_id>/managers/<id:user_id>")
class FacilityManagerById(MethodView):
    @blp.response(200, FacilitySchema)
    def post(self, facility_id: int, user_id: int):
        """Make a user a lab manager of the facility (admins only); they get the lab_manager role."""
        db = get_db()
        actor = current_api_user()
        if not actor.has_role(Role.ADMIN):  # before looking anything up: no existence check for others
            raise Forbidden()
        facilities.get_facility(db, facility_id)
        user = db.get(User, user_id)
        if user is None:
            raise NotFound("user", user_id)
        facilities.assign_manager(db, actor, facility_id, user)
        db.commit()
        return facilities.get_facility(db, facility_id)

    @blp.response(204)
    def delete(self, facility_id: int, user_id: int):
        """Stop a user managing the facility (admins only); their lab_manager role stays. Idempotent."""
        db = get_db()
        facilities.remove_manager(db, current_api_user(), facility_id, user_id)
        db.commit()
