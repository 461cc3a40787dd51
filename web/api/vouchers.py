"""API: a holder's innovation vouchers (balance, expiry, what is left of the annual cap), and applying one to a
charge line. Thin: schema in, service call, schema out."""

from __future__ import annotations

from flask.views import MethodView
from marshmallow import Schema, fields

from billing import vouchers
from core.accounts.models import Role
from core.errors import Forbidden
from web.api.auth import current_api_user
from web.api.blueprint import blp
from web.api.schemas import InputSchema, PageQuery, id_field, page_of
from web.database import get_db


class VoucherQuery(PageQuery):
    holder_id = id_field()  # admins: any holder; everyone else: their own organisation


class VoucherSchema(Schema):
    id = fields.Int()
    number = fields.Str()
    programme_id = fields.Function(lambda s: s.programme.id)
    programme_code = fields.Function(lambda s: s.programme.code)
    programme_name_zh = fields.Function(lambda s: s.programme.name_zh)
    programme_name_en = fields.Function(lambda s: s.programme.name_en)
    coverage_ratio = fields.Function(lambda s: str(s.programme.coverage_ratio))
    holder_id = fields.Int()
    amount = fields.Decimal(as_string=True, places=2)
    balance = fields.Decimal(as_string=True, places=2)
    used = fields.Decimal(as_string=True, places=2)
    valid_from = fields.Function(lambda s: s.voucher.valid_from.isoformat())
    valid_until = fields.Function(lambda s: s.voucher.valid_until.isoformat())
    status = fields.Str(metadata={"description": "active, expired, used_up or not_yet_valid"})
    days_left = fields.Int()
    cap_remaining = fields.Decimal(as_string=True, places=2)
    applications = fields.Int()


class ApplicationCreate(InputSchema):
    charge_line_id = id_field(required=True)


class ApplicationSchema(Schema):
    id = fields.Int()
    voucher_id = fields.Int()
    charge_id = fields.Int()
    charge_line_id = fields.Int()
    eligible_fee = fields.Decimal(as_string=True, places=2)
    coverage_bp = fields.Int()
    amount = fields.Decimal(as_string=True, places=2)
    voucher_balance = fields.Function(lambda a: f"{a.voucher.balance:.2f}")
    service_date = fields.Date()
    applied_at = fields.AwareDateTime()


@blp.route("/vouchers")
class Vouchers(MethodView):
    @blp.arguments(VoucherQuery, location="query")
    @blp.response(200, page_of(VoucherSchema))
    def get(self, args):
        """Your organisation's vouchers, soonest expiring first, with balance, expiry and the annual cap left."""
        db, user = get_db(), current_api_user()
        holder_id = args.get("holder_id", user.organisation_id)
        if holder_id != user.organisation_id and not user.has_role(Role.ADMIN):
            raise Forbidden()
        summaries = vouchers.vouchers_of(db, holder_id)
        page, per_page = args["page"], args["per_page"]
        return {"items": summaries[(page - 1) * per_page:page * per_page], "page": page, "per_page": per_page,
                "total": len(summaries)}


@blp.route("/vouchers/<id:voucher_id>")
class VoucherById(MethodView):
    @blp.response(200, VoucherSchema)
    def get(self, voucher_id: int):
        """One voucher of your organisation."""
        db = get_db()
        return vouchers.summarise(db, vouchers.get_voucher(db, current_api_user(), voucher_id))


@blp.route("/vouchers/<id:voucher_id>/applications")
class VoucherApplications(MethodView):
    @blp.response(200, ApplicationSchema(many=True))
    def get(self, voucher_id: int):
        """What the voucher has subsidised, oldest first."""
        db = get_db()
        vouchers.get_voucher(db, current_api_user(), voucher_id)
        return vouchers.applications_of(db, voucher_id)

    @blp.arguments(ApplicationCreate)
    @blp.response(201, ApplicationSchema)
    @blp.alt_response(409, description="charge_line_already_subsidised, voucher_exhausted, "
                                       "voucher_annual_cap_reached or voucher_budget_exhausted")
    @blp.alt_response(422, description="the voucher cannot be used for this line (code says why: voucher_expired, "
                                       "related_party, not_holders_charge, …) or the input is invalid")
    def post(self, body, voucher_id: int):
        """Apply the voucher to one charge line of your organisation: it covers the programme's share of the
        line's fee, at most the voucher's balance, the annual cap left and the programme's budget left."""
        db = get_db()
        application = vouchers.apply_voucher(db, current_api_user(), voucher_id, body["charge_line_id"])
        db.commit()
        return application


