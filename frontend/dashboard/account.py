"""Dashboard: your account — the signed-in member's email and role, password, and two-step
sign-in (TOTP). Every member, whatever the role, manages their own account here."""

from __future__ import annotations

import segno
from flask import flash, g, redirect, render_template, url_for
from flask_login import login_user
from flask_wtf import FlaskForm
from markupsafe import Markup
from wtforms import HiddenField, PasswordField, StringField
from wtforms.validators import DataRequired, EqualTo, Length

from core.errors import LangoError
from core.extensions import db
from core.ratelimit import client_ip
from frontend.dashboard import bp
from frontend.site import field_error
from tenants import members


class PasswordForm(FlaskForm):
    current_password = PasswordField("Current password", validators=[DataRequired()])
    new_password = PasswordField(
        "New password", validators=[DataRequired(), Length(min=10, max=128)]
    )
    confirm_password = PasswordField(
        "New password again",
        validators=[DataRequired(), EqualTo("new_password", message="The passwords differ.")],
    )


class ConfirmTotpForm(FlaskForm):
    # The secret being set up travels with the form (it is on the page anyway, as text and
    # QR code); nothing is stored until a code proves the authenticator has it.
    secret = HiddenField(validators=[DataRequired()])
    code = StringField(
        "Code from your authenticator app",
        validators=[DataRequired(), Length(min=6, max=7)],
        render_kw={"inputmode": "numeric", "autocomplete": "one-time-code"},
    )


class DisableTotpForm(FlaskForm):
    password = PasswordField("Your password", validators=[DataRequired()])


def _render(password_form=None, disable_form=None, status: int = 200):
    page = render_template(
        "dashboard/account.html",
        totp_on=members.has_totp(g.member),
        password_form=password_form or PasswordForm(formdata=None),
        disable_form=disable_form or DisableTotpForm(formdata=None),
    )
    return page, status


@bp.get("/account")
def account():
    return _render()


@bp.post("/account/password")
def account_password():
    form = PasswordForm()
    if not form.validate_on_submit():
        return _render(password_form=form, status=400)
    try:
        with db.session.begin_nested():
            member = members.change_password(
                g.member.id,
                form.current_password.data,
                form.new_password.data,
                client_address=client_ip(),
            )
    except LangoError as error:
        field_error(form, error)
        return _render(password_form=form, status=error.status)
    login_user(member, remember=False)  # this session continues under the new nonce
    flash("Password changed. Your other sessions were signed out.", "success")
    return redirect(url_for("dashboard.account"))


@bp.route("/account/totp", methods=["GET", "POST"])
def account_totp():
    """Set up two-step sign-in: a new secret (text, otpauth link and QR code), confirmed
    with a code from the app."""
    if members.has_totp(g.member):
        flash("Two-step sign-in is already on.", "info")
        return redirect(url_for("dashboard.account"))
    form = ConfirmTotpForm()
    status = 200
    if form.validate_on_submit():
        try:
            with db.session.begin_nested():
                members.confirm_totp(g.member.id, form.secret.data, form.code.data)
        except LangoError as error:
            field_error(form, error)
            status = error.status
        else:
            flash("Two-step sign-in is on: signing in now asks for a code.", "success")
            return redirect(url_for("dashboard.account"))
    elif form.errors:
        status = 400
    # A failed code keeps the secret the app already holds; a first visit gets a new one.
    secret = form.secret.data if form.is_submitted() else None
    if not members.is_totp_secret(secret):
        secret = members.begin_totp_enrollment(g.member.id).secret
    form.secret.data = secret
    form.code.data = ""
    uri = members.totp_uri(secret, g.member.email)
    page = render_template(
        "dashboard/account_totp.html",
        form=form,
        secret=secret,
        uri=uri,
        # segno draws paths only (no text from the URI), so its SVG is safe to inline.
        qr_svg=Markup(segno.make(uri, error="m").svg_inline(scale=5, svgclass="qr")),  # noqa: S704
    )
    return page, status, {"Cache-Control": "no-store"}


@bp.post("/account/totp/disable")
def account_totp_disable():
    form = DisableTotpForm()
    if not form.validate_on_submit():
        return _render(disable_form=form, status=400)
    try:
        with db.session.begin_nested():
            members.disable_totp(g.member.id, form.password.data, client_address=client_ip())
    except LangoError as error:
        field_error(form, error)
        return _render(disable_form=form, status=error.status)
    flash("Two-step sign-in is off: your password alone signs you in.", "success")
    return redirect(url_for("dashboard.account"))
