"""`/v1/admin`: staff login (password, then TOTP) and the admin console's endpoints.

API keys never work here: these blueprints are `authenticated=False` for keys, and every
route but the two login steps requires a full staff session (password and second factor)
with the right role, checked by `require_staff` before the view runs. Anything less is a
401 in Lango's error shape.

CSRF: the session is a cookie, so a state-changing call also needs the session's CSRF token
in `X-CSRF-Token` (a double submit: the token is returned by the second login step and kept
in the signed session; another site can neither read it nor set the header without a CORS
preflight that Lango never grants). SameSite=Lax cookies and JSON-only bodies are further
layers. The login steps need no token: they accept JSON only, which a cross-site form
cannot send.
"""

from __future__ import annotations

import hmac
import secrets

from flask import current_app, request, session
from flask_login import current_user, login_user, logout_user

from compliance.audit import AuditAction
from core.api import Blueprint, errors
from core.errors import AuthenticationFailed, PermissionDenied
from core.extensions import limiter
from core.ratelimit import client_ip
from staff import plans as plan_admin
from staff import service
from staff import tenants as tenant_admin
from staff.models import StaffRole, StaffUser
from staff.schemas import (
    AdminPlanCreateSchema,
    AdminPlanListSchema,
    AdminPlanSchema,
    AdminPlanUpdateSchema,
    AdminTenantListSchema,
    AdminTenantQuerySchema,
    AdminTenantSchema,
    StaffLoginSchema,
    StaffLoginStepSchema,
    StaffSecondFactorSchema,
    StaffSessionSchema,
    StaffUserSchema,
    SuspendTenantSchema,
)

# How long the password step waits for the second factor, and how long a session may idle.
PENDING_LOGIN_SECONDS = 5 * 60
IDLE_TIMEOUT_SECONDS = 30 * 60
DEFAULT_LOGIN_RATELIMIT = "30 per minute"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
STAFF_SECURITY = [{"staffSession": []}]

staff_login = Blueprint(
    "staff_login", __name__, description="Staff login: password, then TOTP", authenticated=False
)
staff_session = Blueprint(
    "staff_session", __name__, description="The signed-in staff user", authenticated=False
)
admin_tenants = Blueprint(
    "admin_tenants", __name__, description="Tenant lifecycle for admins", authenticated=False
)


class StaffSessionRequired(AuthenticationFailed):
    code = "staff_session_required"
    message = "Sign in as staff (password, then TOTP) to use /v1/admin."


def require_staff(blueprint: Blueprint, *roles: StaffRole) -> None:
    """Every route of `blueprint` requires a full staff session holding one of `roles`
    (any role when none are given), and the CSRF token on state-changing methods."""
    blueprint.staff_roles = tuple(roles)

    @blueprint.before_request
    def check_staff_session() -> None:
        user = current_user._get_current_object()
        if not isinstance(user, StaffUser):
            raise StaffSessionRequired()
        now = service.clock()
        if now - session.get("staff_seen", 0) > IDLE_TIMEOUT_SECONDS:
            logout_user()
            session.pop("staff_csrf", None)
            raise StaffSessionRequired(
                "The staff session expired; sign in again.", code="staff_session_expired"
            )
        session["staff_seen"] = int(now)
        if roles and not user.has_role(*roles):
            raise PermissionDenied(
                f"This needs the {' or '.join(roles)} role.", code="staff_role_required"
            )
        if request.method not in SAFE_METHODS:
            sent = request.headers.get(CSRF_HEADER, "")
            expected = session.get("staff_csrf", "")
            if not (sent and expected and hmac.compare_digest(sent, expected)):
                raise PermissionDenied(
                    f"Send this session's CSRF token as {CSRF_HEADER}.", code="csrf_token_invalid"
                )


def _login_limit() -> str:
    return current_app.config.get("STAFF_LOGIN_RATELIMIT", DEFAULT_LOGIN_RATELIMIT)


def _login_limit_key() -> str:
    return "staff-login:" + client_ip()


@staff_login.post("/v1/admin/login")
@staff_login.doc(security=[])
@limiter.limit(_login_limit, key_func=_login_limit_key)
@staff_login.arguments(StaffLoginSchema)
@staff_login.response(200, StaffLoginStepSchema)
@errors(staff_login, 400, 401, 429)
def login_password(body):
    """Step one: email and password. Starts a half-authenticated login that only the second
    step (`/v1/admin/login/totp`) turns into a session; nothing else accepts it. Failed
    passwords and codes are throttled per account and client address: 429
    `sign_in_throttled` with Retry-After (see `/v1/admin/login/totp`)."""
    staff = service.check_password(body["email"], body["password"], client_address=client_ip())
    logout_user()
    session.clear()
    session["staff_pending"] = {"id": staff.id, "at": int(service.clock())}
    return {"step": "totp"}


@staff_login.post("/v1/admin/login/totp")
@staff_login.doc(security=[])
@limiter.limit(_login_limit, key_func=_login_limit_key)
@staff_login.arguments(StaffSecondFactorSchema)
@staff_login.response(200, StaffSessionSchema)
@errors(staff_login, 400, 401, 429)
def login_second_factor(body):
    """Step two: a TOTP code (each accepted once; ±30 s of drift) or a one-time recovery
    code. Returns the staff user and the session's CSRF token. A code for a time far from
    now is refused with `totp_clock_skew`. After five failed passwords or codes from one
    address, that address waits (1 min, doubling, up to 1 h): 429 `sign_in_throttled` with
    Retry-After; a completed sign-in clears its count. Many failures on one account from
    anywhere slow addresses it never signed in from by up to 60 s; nobody is locked out."""
    pending = session.get("staff_pending") or {}
    if not pending or service.clock() - pending.get("at", 0) > PENDING_LOGIN_SECONDS:
        session.pop("staff_pending", None)
        raise StaffSessionRequired(
            "Send your email and password first (POST /v1/admin/login).",
            code="login_step_missing",
        )
    staff = service.verify_second_factor(
        pending["id"],
        code=body.get("code"),
        recovery_code=body.get("recovery_code"),
        client_address=client_ip(),
    )
    session.clear()
    login_user(staff, remember=False)
    session["staff_seen"] = int(service.clock())
    session["staff_csrf"] = secrets.token_urlsafe(32)
    return {"staff": staff, "csrf_token": session["staff_csrf"]}


require_staff(staff_session)


@staff_session.post("/v1/admin/logout")
@staff_session.doc(security=STAFF_SECURITY)
@staff_session.response(204)
@errors(staff_session, 401, 403)
def logout():
    """End the session; its cookie no longer signs anyone in, even if copied."""
    service.end_session(current_user.id)
    logout_user()
    session.clear()


@staff_session.get("/v1/admin/me")
@staff_session.doc(security=STAFF_SECURITY)
@staff_session.response(200, StaffUserSchema)
@errors(staff_session, 401)
def whoami():
    """The signed-in staff user and their roles."""
    return current_user


require_staff(admin_tenants, StaffRole.ADMIN)


@admin_tenants.get("/v1/admin/tenants")
@admin_tenants.doc(security=STAFF_SECURITY)
@admin_tenants.arguments(AdminTenantQuerySchema, location="query")
@admin_tenants.response(200, AdminTenantListSchema)
@errors(admin_tenants, 400, 401, 403)
def list_tenants(query):
    """Tenants, newest first: filter by status, plan or a fragment of a member's email;
    page with starting_after / ending_before."""
    return tenant_admin.search_tenants(
        status=query.get("status"),
        plan=query.get("plan"),
        email=query.get("email"),
        limit=query["limit"],
        starting_after=query.get("starting_after"),
        ending_before=query.get("ending_before"),
    )


@admin_tenants.get("/v1/admin/tenants/<tenant_id>")
@admin_tenants.doc(security=STAFF_SECURITY)
@admin_tenants.response(200, AdminTenantSchema)
@errors(admin_tenants, 401, 403, 404)
def get_tenant(tenant_id: str):
    """One tenant, with its owner and any admin suspension's reason."""
    return tenant_admin.get_tenant_view(tenant_id)


@admin_tenants.post("/v1/admin/tenants/<tenant_id>/suspend")
@admin_tenants.doc(security=STAFF_SECURITY)
@admin_tenants.arguments(SuspendTenantSchema)
@admin_tenants.response(200, AdminTenantSchema)
@errors(admin_tenants, 400, 401, 403, 404, 409)
def suspend_tenant(body, tenant_id: str):
    """Suspend a tenant (a reason is required): its keys get 403 `tenant_suspended` from
    their next request; callbacks for its in-flight pushes are still recorded."""
    reason = body["reason"]
    view = tenant_admin.suspend_tenant(tenant_id, reason=reason, staff_id=current_user.id)
    tenant_admin.audit_lifecycle(
        AuditAction.TENANT_SUSPENDED, tenant_id, after={"reason": reason}, staff=current_user
    )
    return view


@admin_tenants.post("/v1/admin/tenants/<tenant_id>/reinstate")
@admin_tenants.doc(security=STAFF_SECURITY)
@admin_tenants.response(200, AdminTenantSchema)
@errors(admin_tenants, 401, 403, 404, 409)
def reinstate_tenant(tenant_id: str):
    """Reinstate a suspended tenant (whatever suspended it); its keys work again at once."""
    view = tenant_admin.reinstate_tenant(tenant_id, staff_id=current_user.id)
    tenant_admin.audit_lifecycle(
        AuditAction.TENANT_REINSTATED, tenant_id, after={"status": "active"}, staff=current_user
    )
    return view


@admin_tenants.get("/v1/admin/plans")
@admin_tenants.doc(security=STAFF_SECURITY)
@admin_tenants.response(200, AdminPlanListSchema)
@errors(admin_tenants, 401, 403)
def list_plans():
    """Every plan in catalog order, retired ones included (`active: false`)."""
    return {"data": plan_admin.list_all_plans()}


@admin_tenants.post("/v1/admin/plans")
@admin_tenants.doc(security=STAFF_SECURITY)
@admin_tenants.arguments(AdminPlanCreateSchema)
@admin_tenants.response(201, AdminPlanSchema)
@errors(admin_tenants, 400, 401, 403, 409)
def create_plan(body):
    """Add a plan to the catalog (rate_limit in Flask-Limiter notation, e.g. "50 per second")."""
    return plan_admin.create_plan(current_user, body)


@admin_tenants.patch("/v1/admin/plans/<code>")
@admin_tenants.doc(security=STAFF_SECURITY)
@admin_tenants.arguments(AdminPlanUpdateSchema)
@admin_tenants.response(200, AdminPlanSchema)
@errors(admin_tenants, 400, 401, 403, 404)
def update_plan(body, code: str):
    """Edit any field of a plan but its code; subscribers see the change at once."""
    return plan_admin.update_plan(current_user, code, body)


@admin_tenants.post("/v1/admin/plans/<code>/retire")
@admin_tenants.doc(security=STAFF_SECURITY)
@admin_tenants.response(200, AdminPlanSchema)
@errors(admin_tenants, 401, 403, 404, 409)
def retire_plan(code: str):
    """Take a plan off sale: existing subscribers keep it; signup and plan changes refuse it."""
    return plan_admin.retire_plan(current_user, code)
