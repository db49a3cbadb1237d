"""Dashboard: the team — members with their roles and pending invite links. Every member
reads it; only owners invite, revoke invites, change roles and remove members
(tenants.members enforces the same, and never leaves a team without an owner).

An invite link is shown once, in the answer to the POST that made it (rendered directly, not
through a redirect), so its token never passes through the session cookie or a flash."""

from __future__ import annotations

from flask import flash, g, redirect, render_template, session, url_for
from flask_login import logout_user
from flask_wtf import FlaskForm
from wtforms import EmailField, SelectField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Length

from core.errors import LangoError
from core.extensions import db
from frontend.auth import require_role
from frontend.dashboard import bp
from frontend.site import email_address, field_error
from tenants import members
from tenants.models import MemberRole

ROLE_CHOICES = [
    SelectChoice(MemberRole.OWNER.value, "Owner — everything, including billing and the team"),
    SelectChoice(MemberRole.DEVELOPER.value, "Developer — API keys, webhooks, test pushes"),
    SelectChoice(MemberRole.VIEWER.value, "Viewer — reads everything, changes nothing"),
]


class InviteForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired(), Length(max=254), email_address])
    role = SelectField("Role", choices=ROLE_CHOICES, default=MemberRole.DEVELOPER.value)


class RoleForm(FlaskForm):
    role = SelectField("Role", choices=ROLE_CHOICES)


def _render(form: InviteForm | None = None, invite_link: str | None = None, status: int = 200):
    page = render_template(
        "dashboard/team.html",
        members=members.list_members(g.tenant.id),
        invites=members.list_invites(g.tenant.id),
        form=form or InviteForm(formdata=None),
        role_choices=ROLE_CHOICES,
        invite_link=invite_link,
    )
    headers = {"Cache-Control": "no-store"} if invite_link else {}
    return page, status, headers


@bp.get("/team")
def team():
    return _render()


@bp.post("/team/invites")
@require_role(MemberRole.OWNER)
def team_invite():
    form = InviteForm()
    if not form.validate_on_submit():
        return _render(form, status=400)
    try:
        with db.session.begin_nested():
            invite, token = members.invite_member(
                g.tenant.id, form.email.data, form.role.data, g.member
            )
    except LangoError as error:
        field_error(form, error)
        return _render(form, status=error.status)
    flash(
        f"Invite link made for {invite.email} ({invite.role}). Copy it now and send it to "
        "them: it is shown only this once, works once and expires in 7 days.",
        "success",
    )
    link = url_for("site.invite", token=token, _external=True)
    return _render(invite_link=link)


@bp.post("/team/invites/<invite_id>/revoke")
@require_role(MemberRole.OWNER)
def team_revoke_invite(invite_id: str):
    try:
        with db.session.begin_nested():
            invite = members.revoke_invite(g.tenant.id, invite_id, g.member)
    except LangoError as error:
        flash(error.message, "error")
        return _render(status=error.status)
    flash(f"Invite for {invite.email} revoked; its link no longer works.", "success")
    return redirect(url_for("dashboard.team"))


@bp.post("/team/members/<member_id>/role")
@require_role(MemberRole.OWNER)
def team_change_role(member_id: str):
    form = RoleForm()
    if not form.validate_on_submit():
        flash("Choose owner, developer or viewer.", "error")
        return _render(status=400)
    try:
        with db.session.begin_nested():
            member = members.change_role(g.tenant.id, member_id, form.role.data, g.member)
    except LangoError as error:
        flash(error.message, "error")
        return _render(status=error.status)
    flash(f"{member.email} is now {member.role}.", "success")
    return redirect(url_for("dashboard.team"))


@bp.post("/team/members/<member_id>/remove")
@require_role(MemberRole.OWNER)
def team_remove_member(member_id: str):
    myself = member_id == g.member.id
    try:
        with db.session.begin_nested():
            member = members.get_member(g.tenant.id, member_id)
            email = member.email
            members.remove_member(g.tenant.id, member_id, g.member)
    except LangoError as error:
        flash(error.message, "error")
        return _render(status=error.status)
    if myself:
        team_name = g.tenant.business_name
        logout_user()
        session.clear()
        flash(f"You left the {team_name} team.", "success")
        return redirect(url_for("site.login"))
    flash(f"{email} was removed from the team and signed out.", "success")
    return redirect(url_for("dashboard.team"))
