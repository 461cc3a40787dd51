"""API: who am I, my tokens, organisations and facilities."""

from __future__ import annotations

from flask.views import MethodView
from sqlalchemy import select

from booking.models import Facility
from booking.permissions import managed_facility_ids
from core.accounts import tokens
from core.accounts.models import Organisation
from web.api.auth import current_api_user
from web.api.blueprint import blp
from web.api.pagination import paginate
from web.api.schemas import (
    FacilitySchema,
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
        return paginate(get_db(), select(Facility).order_by(Facility.id), args["page"], args["per_page"])
