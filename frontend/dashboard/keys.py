"""Dashboard: API keys of the mode on screen — list, create, roll (with a grace period),
revoke. Owners and developers only.

A new secret is shown once, in the answer to the POST that made it (rendered directly, not
through a redirect), so it never passes through the session cookie or a flash message."""

from __future__ import annotations

from datetime import timedelta

from flask import flash, g, redirect, render_template, request, url_for
from flask_wtf import FlaskForm
from wtforms import SelectField, StringField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Length

from core.errors import LangoError
from core.extensions import db
from frontend.auth import EDITORS, require_role
from frontend.dashboard import bp
from tenants import service
from tenants.service import IssuedKey

GRACE_CHOICES = [
    SelectChoice("0", "Stop the old key now"),
    SelectChoice("3600", "Keep it 1 hour"),
    SelectChoice("86400", "Keep it 24 hours"),
]
PAGE_SIZE = 50


class CreateKeyForm(FlaskForm):
    name = StringField("Name", validators=[DataRequired(), Length(max=100)], default="Secret key")


class RollKeyForm(FlaskForm):
    grace_seconds = SelectField("Old key", choices=GRACE_CHOICES, default="0")


def _render(form: CreateKeyForm | None = None, issued: IssuedKey | None = None, status=200):
    page = service.list_api_keys(
        g.tenant.id,
        livemode=g.livemode,
        limit=PAGE_SIZE,
        starting_after=request.args.get("starting_after") or None,
        ending_before=request.args.get("ending_before") or None,
    )
    response = render_template(
        "dashboard/keys.html",
        page=page,
        form=form or CreateKeyForm(formdata=None),
        roll_form=RollKeyForm(formdata=None),
        issued=issued,
        may_create=not g.livemode or g.tenant.live_enabled,
    )
    headers = {"Cache-Control": "no-store"} if issued else {}
    return response, status, headers


@bp.get("/keys")
@require_role(*EDITORS)
def keys():
    return _render()


@bp.post("/keys")
@require_role(*EDITORS)
def create_key():
    form = CreateKeyForm()
    if not form.validate_on_submit():
        flash("Give the key a name (up to 100 characters).", "error")
        return _render(form, status=400)
    if g.livemode and not g.tenant.live_enabled:
        flash(
            "Live keys need live mode, which is not enabled for this account yet: submit your "
            "business details and M-Pesa credentials under Settings; Lango turns it on once "
            "they are approved.",
            "error",
        )
        return _render(form, status=403)
    try:
        with db.session.begin_nested():
            issued = service.create_api_key(g.tenant.id, livemode=g.livemode, name=form.name.data)
    except LangoError as error:
        flash(error.message, "error")
        return _render(form, status=error.status)
    flash(f"Key “{issued.key.name}” created. Copy its secret now.", "success")
    return _render(issued=issued, status=201)


@bp.post("/keys/<string:key_id>/roll")
@require_role(*EDITORS)
def roll_key(key_id: str):
    form = RollKeyForm()
    if not form.validate_on_submit():
        flash("Choose how long the old key keeps working.", "error")
        return _render(status=400)
    grace = timedelta(seconds=int(form.grace_seconds.data))
    # NotFound (another tenant's or mode's key, or one already revoked) → the 404 page.
    issued = service.roll_api_key(g.tenant.id, key_id, livemode=g.livemode, grace=grace)
    until = "stopped working now" if not grace else f"keeps working for {_hours(grace)}"
    flash(f"Key “{issued.key.name}” rolled: the old secret {until}. Copy the new one.", "success")
    return _render(issued=issued, status=201)


@bp.post("/keys/<string:key_id>/revoke")
@require_role(*EDITORS)
def revoke_key(key_id: str):
    key = service.revoke_api_key(g.tenant.id, key_id, livemode=g.livemode)
    flash(f"Key “{key.name}” ({key.prefix}…{key.last4}) revoked; it no longer works.", "success")
    return redirect(url_for("dashboard.keys"))


def _hours(grace: timedelta) -> str:
    hours = int(grace.total_seconds() // 3600)
    return f"{hours} hour{'' if hours == 1 else 's'}"
