"""Staff sign-in for the consoles: password, then a TOTP code (or a recovery code).

The same rules as `/v1/admin/login` (staff.service): the password step only records a
pending login in the session, which nothing but the second step accepts, for five minutes.
"""

from __future__ import annotations

from flask import flash, redirect, render_template, request, session, url_for
from flask_login import current_user, login_user, logout_user
from flask_wtf import FlaskForm
from wtforms import EmailField, PasswordField, StringField
from wtforms.validators import DataRequired, Length, Optional

from core.errors import LangoError
from core.extensions import limiter
from core.ratelimit import client_ip
from frontend.auth import page_blueprint, safe_next
from staff import service
from staff.api import PENDING_LOGIN_SECONDS, _login_limit, _login_limit_key
from staff.models import StaffRole, StaffUser

bp = page_blueprint("staff_pages", __name__, url_prefix="/staff")


class StaffPasswordForm(FlaskForm):
    # No format check: signing in only asks whether an account has this email (accounts made
    # with `lango staff create` may use any address, such as the demo's staff@lango.local).
    email = EmailField("Email", validators=[DataRequired(), Length(max=254)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=200)])


class StaffCodeForm(FlaskForm):
    code = StringField(
        "Authenticator code",
        validators=[Optional(), Length(min=6, max=6)],
        render_kw={"inputmode": "numeric", "autocomplete": "one-time-code"},
    )
    recovery_code = StringField("Or a recovery code", validators=[Optional(), Length(max=40)])


def _home_for(staff: StaffUser) -> str:
    if staff.has_role(StaffRole.ADMIN):
        return url_for("admin.tenants")
    return url_for("compliance.audit")


@bp.get("")
def home():
    user = current_user._get_current_object()
    if isinstance(user, StaffUser):
        return redirect(_home_for(user))
    return redirect(url_for("staff_pages.login"))


@bp.route("/login", methods=["GET", "POST"])
@limiter.limit(_login_limit, key_func=_login_limit_key, methods=["POST"])
def login():
    form = StaffPasswordForm()
    if form.validate_on_submit():
        # No savepoint: a failed attempt writes only its audit entry, which the service
        # commits itself (a checkpoint) so that it stands.
        try:
            staff = service.check_password(
                form.email.data, form.password.data, client_address=client_ip()
            )
        except LangoError as error:
            flash(error.message, "error")
            return render_template("staff/login.html", form=form), error.status, error.headers
        logout_user()
        session.clear()
        session["staff_pending"] = {"id": staff.id, "at": int(service.clock())}
        session["staff_next"] = safe_next(request.args.get("next"), "")
        return redirect(url_for("staff_pages.second_factor"))
    return render_template("staff/login.html", form=form), 400 if form.errors else 200


@bp.route("/login/totp", methods=["GET", "POST"])
@limiter.limit(_login_limit, key_func=_login_limit_key, methods=["POST"])
def second_factor():
    pending = session.get("staff_pending") or {}
    if not pending or service.clock() - pending.get("at", 0) > PENDING_LOGIN_SECONDS:
        session.pop("staff_pending", None)
        flash("Sign in with your password first.", "info")
        return redirect(url_for("staff_pages.login"))
    form = StaffCodeForm()
    if form.validate_on_submit():
        if not (form.code.data or form.recovery_code.data):
            form.code.errors.append("Enter the 6-digit code from your authenticator app.")
            return render_template("staff/totp.html", form=form), 400
        try:  # no savepoint, as for the password
            staff = service.verify_second_factor(
                pending["id"],
                code=form.code.data or None,
                recovery_code=form.recovery_code.data or None,
                client_address=client_ip(),
            )
        except LangoError as error:
            flash(error.message, "error")
            return render_template("staff/totp.html", form=form), error.status, error.headers
        target = session.get("staff_next") or ""
        session.clear()
        login_user(staff, remember=False)
        session["staff_seen"] = int(service.clock())
        flash(f"Signed in as {staff.name}.", "success")
        return redirect(target or _home_for(staff))
    return render_template("staff/totp.html", form=form), 400 if form.errors else 200


@bp.post("/logout")
def logout():
    user = current_user._get_current_object()
    if isinstance(user, StaffUser):
        service.end_session(user.id)
    logout_user()
    session.clear()
    flash("Signed out.", "success")
    return redirect(url_for("staff_pages.login"))
