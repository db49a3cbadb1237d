"""Who may see a page: tenant members (by role) in the dashboard, staff (by role, after
password and TOTP) in the consoles. Every page blueprint also checks CSRF on every
state-changing request, before its view runs.

Refusals: nobody signed in → redirect to the right sign-in page (with `next`); signed in as
the wrong kind of user or without the role → 403 page. A staff login that has passed the
password step only is not signed in at all (it lives in `session["staff_pending"]`).
"""

from __future__ import annotations

import functools
from pathlib import Path
from urllib.parse import urlsplit

from flask import Blueprint, abort, g, redirect, request, session, url_for
from flask_login import current_user, logout_user
from flask_wtf.csrf import CSRFProtect

from core.api import NUL_MESSAGE, field_with_nul, validation_error
from core.tenancy import enter_tenant
from core.unit_of_work import Checkpoint, checkpoint
from staff import service as staff_service
from staff.models import StaffRole, StaffUser
from tenants.models import Member, MemberRole
from tenants.service import get_tenant

csrf = CSRFProtect()
FRONTEND_ROOT = str(Path(__file__).resolve().parent)

SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
# A staff console session ends after this long without a request (as for /v1/admin).
STAFF_IDLE_SECONDS = 30 * 60
# Roles that may change things in the dashboard; viewers only read.
EDITORS = (MemberRole.OWNER, MemberRole.DEVELOPER)


def page_blueprint(name: str, import_name: str, url_prefix: str | None = None, **kwargs):
    """A blueprint of HTML pages: templates from frontend/templates, errors as pages, CSRF
    checked on every state-changing request."""
    blueprint = Blueprint(
        name,
        import_name,
        url_prefix=url_prefix,
        root_path=FRONTEND_ROOT,
        template_folder="templates",
        **kwargs,
    )
    blueprint.is_page = True
    protect_forms(blueprint)
    refuse_nul_in_forms(blueprint)
    return blueprint


def refuse_nul_in_forms(blueprint: Blueprint) -> None:
    """A form field holding a NUL character gets the 400 page naming it: PostgreSQL cannot
    store one, and no field needs it (the URL is checked app-wide, in core)."""

    @blueprint.before_request
    def check_form() -> None:
        name = field_with_nul(request.form)
        if name is not None:
            raise validation_error({name: [NUL_MESSAGE]})


def protect_forms(blueprint: Blueprint) -> None:
    """CSRF on every POST/PUT/PATCH/DELETE of `blueprint` (Flask-WTF's token: a hidden
    `csrf_token` field, or the `X-CSRFToken` header from scripts)."""

    @blueprint.before_request
    def check_csrf() -> None:
        if request.method not in SAFE_METHODS:
            csrf.protect()


def member_area(blueprint: Blueprint) -> None:
    """Every page of `blueprint` needs a signed-in member; it runs in the member's tenant
    schema, with `g.member`, `g.tenant` and `g.livemode` (the dashboard's mode switch)."""

    @blueprint.before_request
    def require_member():
        user = current_user._get_current_object()
        if isinstance(user, StaffUser):
            abort(403, "Staff accounts do not sign in to tenant dashboards.")
        if not isinstance(user, Member):
            return redirect(url_for("site.login", next=_local_path(request.full_path)))
        g.member = user
        g.tenant = get_tenant(user.tenant_id)
        g.livemode = bool(session.get("livemode", False))
        # The session reads above ran on the platform schema; end that transaction before
        # the tenant binding starts the next one, as for an API key. (Read the id first:
        # after the checkpoint the expired member would reload it in a new, unbound
        # transaction.)
        tenant_id = user.tenant_id
        checkpoint(Checkpoint.CALLER_RESOLVED)
        g.tenant_token = enter_tenant(tenant_id)


def require_role(*roles: MemberRole):
    """A dashboard view only these member roles may use (others get the 403 page)."""

    def decorate(view):
        @functools.wraps(view)
        def guarded(*args, **kwargs):
            if g.member.role not in roles:
                abort(403, f"This needs the {' or '.join(roles)} role.")
            return view(*args, **kwargs)

        return guarded

    return decorate


def can_edit() -> bool:
    """For templates: whether the signed-in member may change things (owner or developer)."""
    member = g.get("member")
    return member is not None and member.role in EDITORS


def is_owner() -> bool:
    member = g.get("member")
    return member is not None and member.role is MemberRole.OWNER


def staff_area(blueprint: Blueprint, role: StaffRole) -> None:
    """Every page of `blueprint` needs a full staff session (password and TOTP) with
    `role`; an idle session expires like the API's."""

    @blueprint.before_request
    def require_staff():
        user = current_user._get_current_object()
        if isinstance(user, Member):
            abort(403, "Tenant members cannot open the staff consoles.")
        if not isinstance(user, StaffUser):
            return redirect(url_for("staff_pages.login", next=_local_path(request.full_path)))
        now = staff_service.clock()
        if now - session.get("staff_seen", 0) > STAFF_IDLE_SECONDS:
            logout_user()
            session.clear()
            return redirect(url_for("staff_pages.login", next=_local_path(request.full_path)))
        session["staff_seen"] = int(now)
        if not user.has_role(role):
            abort(403, f"This console needs the {role} role.")
        g.staff = user


def _local_path(path: str) -> str:
    return path.rstrip("?")


def safe_next(target: str | None, default: str) -> str:
    """Where to go after signing in: only a path on this site (no open redirects)."""
    if not target:
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return default
    return target
