"""Lab managers' device registry pages (admins: every facility): the devices of their facilities, adding one,
rotating its broker credential and enabling or disabling it. A broker password appears once, on the page that
answers the request that made it, and is never stored or shown again."""

from __future__ import annotations

import math
import shlex
from urllib.parse import urlsplit

from flask import Blueprint, abort, current_app, flash, make_response, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import current_user
from sqlalchemy import select

from booking.models import Facility, Resource
from booking.permissions import can_manage_facility, managed_facility_ids
from core.accounts.models import Role
from core.errors import Forbidden, InvalidInput, NotFound
from core.timeutil import utcnow
from devices import live, registry
from devices.models import Device
from web.api.pagination import paginate
from web.api.schemas import MAX_ID
from web.authz import roles_required
from web.database import get_db
from web.devices.forms import USAGE_SOURCE_NAMES, DeviceActionForm, DeviceForm
from web.forms import apply_field_errors, safe_next
from web.live import texts
from web.templating import localised

bp = Blueprint("devices_manage", __name__, url_prefix="/manage")

MANAGERS = (Role.LAB_MANAGER, Role.ADMIN)
PER_PAGE = 50


def _managed_facility(facility_id: int) -> Facility:
    db = get_db()
    facility = db.get(Facility, facility_id) if 0 < facility_id <= MAX_ID else None
    if facility is None:
        abort(404)
    if not can_manage_facility(db, current_user, facility_id):
        abort(403)
    return facility


def _managed_device(device_pk: int) -> Device:
    if device_pk > MAX_ID:  # a larger number cannot name a row
        abort(404)
    try:
        return registry.managed_device(get_db(), current_user, device_pk)
    except NotFound:
        abort(404)
    except Forbidden:
        abort(403)


def _managed_facilities() -> list[Facility]:
    db = get_db()
    scope = managed_facility_ids(db, current_user)
    query = select(Facility).order_by(Facility.id)
    if scope is not None:
        query = query.where(Facility.id.in_(scope))
    return list(db.scalars(query))


@bp.get("/devices")
@roles_required(*MANAGERS)
def devices():
    db = get_db()
    facility_id = request.args.get("facility", type=int)
    facility = _managed_facility(facility_id) if facility_id is not None else None
    query = select(Device).join(Resource, Device.resource_id == Resource.id).order_by(
        Resource.facility_id, Device.device_id)
    if facility is not None:
        query = query.where(Resource.facility_id == facility.id)
    else:
        scope = managed_facility_ids(db, current_user)
        if scope is not None:
            query = query.where(Resource.facility_id.in_(scope))
    page = max(request.args.get("page", 1, type=int), 1)
    listing = paginate(db, query, page, PER_PAGE)
    args = {"facility": facility.id} if facility is not None else {}
    now = utcnow()
    states = {d.id: live.effective_state(d, now) for d in listing["items"]}
    return render_template("devices/list.html", devices=listing["items"], total=listing["total"], page=page,
                           live_states=states, state_labels=texts.STATE_LABELS, state_icons=texts.STATE_ICONS,
                           state_tones=live.STATE_TONES, state_colours=live.STATE_COLOURS,
                           pages=max(math.ceil(listing["total"] / PER_PAGE), 1), args=args, facility=facility,
                           facilities=_managed_facilities(), source_names=USAGE_SOURCE_NAMES,
                           action_form=DeviceActionForm(formdata=None), here=request.full_path.rstrip("?"))


def _resource_choices(form: DeviceForm, facility: Facility | None) -> set[int]:
    """Offer the resources of the facilities the user manages (of `facility` only, when given); returns their ids."""
    db = get_db()
    query = select(Resource).join(Facility).order_by(Facility.id, Resource.kind, Resource.id)
    if facility is not None:
        query = query.where(Resource.facility_id == facility.id)
    else:
        scope = managed_facility_ids(db, current_user)
        if scope is not None:
            query = query.where(Resource.facility_id.in_(scope))
    resources = list(db.scalars(query))
    form.resource_id.choices = [("", _("Choose …"))] + [
        (str(r.id), f"{localised(r.facility)} · {localised(r)}") for r in resources]
    return {r.id for r in resources}


def _credential_page(device: Device, secret: str, *, new: bool):
    """The broker password with everything needed to use it; never cached, never shown again."""
    broker = urlsplit(current_app.config["LABSHARE_SETTINGS"].mqtt_url)
    host = broker.hostname or "127.0.0.1"
    port = broker.port or (8883 if broker.scheme == "mqtts" else 1883)
    topic_prefix = f"{registry.DEFAULT_PREFIX}/{device.device_id}/"
    command = ["mosquitto_pub", "-h", host, "-p", str(port), "-u", device.device_id, "-P", secret]
    if broker.scheme == "mqtts":
        command.append("--tls-use-os-certs")
    command += ["-q", "1", "-r", "-t", f"{topic_prefix}status", "-m", '{"state": "idle"}']
    response = make_response(render_template(
        "devices/credential.html", device=device, secret=secret, new=new, topic_prefix=topic_prefix,
        example=shlex.join(command), broker=f"{host}:{port}", source_names=USAGE_SOURCE_NAMES))
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.route("/devices/new", methods=["GET", "POST"])
@roles_required(*MANAGERS)
def new_device():
    db = get_db()
    facility_id = request.args.get("facility", type=int)
    facility = _managed_facility(facility_id) if facility_id is not None else None
    form = DeviceForm()
    allowed = _resource_choices(form, facility)
    status = 200
    if request.method == "GET":
        form.resource_id.data = request.args.get("resource", "")
    elif form.validate_on_submit():
        resource_id = int(form.resource_id.data) if (form.resource_id.data or "").isdigit() else None
        if resource_id not in allowed:
            form.resource_id.errors = [_("Choose a resource of a facility you manage.")]
            status = 422
        else:
            data = registry.DeviceData(
                device_id=form.device_id.data or "", resource_id=resource_id, usage_source=form.usage_source.data,
                description=form.description.data or "", power_threshold_w=(form.power_threshold_w.data or "").strip(),
                debounce_s=form.debounce_s.data, heartbeat_timeout_s=form.heartbeat_timeout_s.data)
            try:
                device, secret = registry.add_device(db, current_user, data)
            except InvalidInput as exc:
                db.rollback()
                apply_field_errors(form, exc)
                status = 422
            else:
                db.commit()
                return _credential_page(device, secret, new=True)
    else:
        status = 422
    return render_template("devices/form.html", form=form, facility=facility), status


@bp.route("/devices/<int:device_pk>/credential", methods=["GET", "POST"])
@roles_required(*MANAGERS)
def rotate_credential(device_pk: int):
    """GET asks for confirmation; POST replaces the password (the old one stops working once exported)."""
    db = get_db()
    device = _managed_device(device_pk)
    form = DeviceActionForm()
    if request.method == "POST" and form.validate_on_submit():
        secret = registry.rotate_credential(db, current_user, device_pk)
        db.commit()
        return _credential_page(device, secret, new=False)
    return render_template("devices/rotate.html", device=device, form=form, source_names=USAGE_SOURCE_NAMES)


def _set_enabled(device_pk: int, enabled: bool):
    db = get_db()
    device = _managed_device(device_pk)
    form = DeviceActionForm()
    target = safe_next(form.next.data, url_for(".devices"))
    if not form.validate_on_submit():
        abort(400)
    registry.set_enabled(db, current_user, device_pk, enabled)
    db.commit()
    if enabled:
        flash(_("Device %(device_id)s is enabled.", device_id=device.device_id), "success")
    else:
        flash(_("Device %(device_id)s is disabled: its messages are dropped.", device_id=device.device_id),
              "success")
    return redirect(target)


@bp.post("/devices/<int:device_pk>/enable")
@roles_required(*MANAGERS)
def enable_device(device_pk: int):
    return _set_enabled(device_pk, True)


@bp.post("/devices/<int:device_pk>/disable")
@roles_required(*MANAGERS)
def disable_device(device_pk: int):
    return _set_enabled(device_pk, False)
