"""Tenant lifecycle for admins: list and search, view, suspend with a reason, reinstate.

Suspension changes only `tenants.status` / `suspended_reason` ('admin'): API key
authentication reads both on every request (tenants.service.authenticate), so the tenant's
keys get 403 `tenant_suspended` from the next request on, with no cache to expire. Callbacks
for its in-flight pushes are still recorded (the callback route never checks status).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import func, or_, select, update

from billing.models import Plan, Subscription
from billing.subscriptions import current_subscription, find_plan
from billing.usage import counted_this_period
from compliance.audit import Actor, ActorType, AuditAction, record
from compliance.kyc import KycSubmission, find_latest_submission
from core.api import paginate
from core.errors import Conflict, NotFound
from core.extensions import db
from core.ids import new_id
from staff.models import AdminSuspension, StaffUser
from tenants.models import ApiKey, Member, MemberRole, Tenant, TenantStatus

logger = logging.getLogger("lango.staff.tenants")

SUSPENSION_REASON = "admin"


@dataclass(frozen=True)
class TenantView:
    """A tenant as staff see it: the row, its owner's email, the open admin suspension."""

    tenant: Tenant
    owner_email: str | None
    suspension: AdminSuspension | None
    # Pushes counted in the current billing period (live, test).
    pushes_this_period: int = 0
    test_pushes_this_period: int = 0

    def __getattr__(self, name: str):
        return getattr(self.tenant, name)

    @property
    def suspension_note(self) -> str | None:
        return self.suspension.reason if self.suspension else None


def search_tenants(
    *,
    status: str | None,
    plan: str | None,
    email: str | None,
    limit: int,
    query: str | None = None,
    **cursor,
) -> dict:
    """A page of tenants, newest first, filtered by status, plan and a fragment of any of
    their members' emails; `query` matches a fragment of the business name, the tenant id
    or a fragment of a member's email (the admin console's one search box)."""
    statement = select(Tenant)
    if status:
        statement = statement.where(Tenant.status == TenantStatus(status))
    if plan:
        statement = statement.where(Tenant.plan == plan)
    if email:
        statement = statement.where(Tenant.id.in_(_members_matching(email)))
    if query and query.strip():
        pattern = f"%{_like_escaped(query.strip())}%"
        statement = statement.where(
            or_(
                Tenant.business_name.ilike(pattern, escape="\\"),
                Tenant.id == query.strip().lower(),
                Tenant.id.in_(_members_matching(query)),
            )
        )
    page = paginate(statement, Tenant.id, limit=limit, **cursor)
    page["data"] = [_view(tenant) for tenant in page["data"]]
    return page


def _like_escaped(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", r"\%").replace("_", r"\_")


def _members_matching(email: str):
    """Ids of tenants with a member whose email contains `email` (a LIKE-safe fragment)."""
    fragment = _like_escaped(email.strip().lower())
    return select(Member.tenant_id).where(Member.email.like(f"%{fragment}%", escape="\\"))


def get_tenant_view(tenant_id: str) -> TenantView:
    tenant = db.session.get(Tenant, tenant_id)
    if tenant is None:
        raise NotFound("No such tenant.", param="tenant_id")
    return _view(tenant)


def suspend_tenant(tenant_id: str, *, reason: str, staff_id: str) -> TenantView:
    """Suspend a tenant for reason 'admin', recording the reason text and who (flushed).
    A tenant suspended for billing becomes suspended by admin (paying no longer lifts it);
    one already suspended by an admin is a Conflict, raised before anything is written."""
    tenant = _locked(tenant_id)
    if tenant.status is TenantStatus.SUSPENDED and tenant.suspended_reason == SUSPENSION_REASON:
        raise Conflict("This tenant is already suspended.", code="tenant_already_suspended")
    tenant.status = TenantStatus.SUSPENDED
    tenant.suspended_reason = SUSPENSION_REASON
    db.session.add(
        AdminSuspension(id=new_id("sus"), tenant_id=tenant_id, reason=reason, suspended_by=staff_id)
    )
    db.session.flush()
    logger.warning("admin.tenant_suspended", extra={"tenant_id": tenant_id, "staff_id": staff_id})
    return get_tenant_view(tenant_id)


def reinstate_tenant(tenant_id: str, *, staff_id: str) -> TenantView:
    """Reactivate a suspended tenant, whatever suspended it (flushed); an active one is a
    Conflict, raised before anything is written. Closes the open admin suspension record."""
    tenant = _locked(tenant_id)
    if tenant.status is TenantStatus.ACTIVE:
        raise Conflict("This tenant is not suspended.", code="tenant_not_suspended")
    tenant.status = TenantStatus.ACTIVE
    tenant.suspended_reason = None
    db.session.execute(
        update(AdminSuspension)
        .where(AdminSuspension.tenant_id == tenant_id, AdminSuspension.reinstated_at.is_(None))
        .values(reinstated_by=staff_id, reinstated_at=datetime.now(UTC))
    )
    db.session.flush()
    logger.warning("admin.tenant_reinstated", extra={"tenant_id": tenant_id, "staff_id": staff_id})
    return get_tenant_view(tenant_id)


def _locked(tenant_id: str) -> Tenant:
    tenant = db.session.scalar(select(Tenant).where(Tenant.id == tenant_id).with_for_update())
    if tenant is None:
        raise NotFound("No such tenant.", param="tenant_id")
    return tenant


def _view(tenant: Tenant) -> TenantView:
    owner_email = db.session.scalar(
        select(func.min(Member.email)).where(
            Member.tenant_id == tenant.id, Member.role == MemberRole.OWNER
        )
    )
    suspension = None
    if tenant.status is TenantStatus.SUSPENDED and tenant.suspended_reason == SUSPENSION_REASON:
        suspension = db.session.scalar(
            select(AdminSuspension)
            .where(AdminSuspension.tenant_id == tenant.id, AdminSuspension.reinstated_at.is_(None))
            .order_by(AdminSuspension.suspended_at.desc())
            .limit(1)
        )
    live, test = counted_this_period(tenant.id)
    return TenantView(tenant, owner_email, suspension, live, test)


# --- the admin console's tenant page --------------------------------------------------------


@dataclass(frozen=True)
class KeySummary:
    """An API key as staff may see it: never the secret or its hash, only the prefix and
    the last four characters."""

    id: str
    name: str
    livemode: bool
    prefix: str
    last4: str
    created_at: datetime
    last_used_at: datetime | None
    expires_at: datetime | None
    revoked_at: datetime | None

    @property
    def state(self) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= datetime.now(UTC):
            return "expired"
        return "active"


@dataclass(frozen=True)
class MemberSummary:
    email: str
    role: MemberRole
    created_at: datetime


@dataclass(frozen=True)
class SuspensionRecord:
    """One admin suspension, with the staff users' emails instead of their ids."""

    reason: str
    suspended_at: datetime
    suspended_by: str | None
    reinstated_at: datetime | None
    reinstated_by: str | None


@dataclass(frozen=True)
class TenantDetail:
    """Everything the admin console shows about one tenant (read-only)."""

    view: TenantView
    plan: Plan | None
    subscription: Subscription | None
    keys: list[KeySummary]
    members: list[MemberSummary]
    kyc: KycSubmission | None  # the latest submission
    suspensions: list[SuspensionRecord]


def get_tenant_detail(tenant_id: str, *, suspensions: int = 10) -> TenantDetail:
    """The tenant with its plan and subscription, API keys of both modes (revoked and
    expired included), members, latest KYC submission and its last admin suspensions.
    Raises NotFound."""
    view = get_tenant_view(tenant_id)
    try:
        subscription, plan = current_subscription(tenant_id)
    except LookupError:
        subscription, plan = None, find_plan(view.plan)
    keys = db.session.scalars(
        select(ApiKey).where(ApiKey.tenant_id == tenant_id).order_by(ApiKey.id.desc())
    )
    members = db.session.scalars(
        select(Member).where(Member.tenant_id == tenant_id).order_by(Member.created_at, Member.id)
    )
    kyc = find_latest_submission(tenant_id)
    return TenantDetail(
        view=view,
        plan=plan,
        subscription=subscription,
        keys=[_key_summary(key) for key in keys],
        members=[MemberSummary(m.email, m.role, m.created_at) for m in members],
        kyc=kyc,
        suspensions=_suspension_history(tenant_id, suspensions),
    )


def audit_lifecycle(action: AuditAction, tenant_id: str, *, after: dict, staff) -> None:
    """Audit a suspension or reinstatement by `staff`, in the change's own unit of work:
    the entry commits, or rolls back, with the change."""
    record(
        action,
        target_type="tenant",
        target_id=tenant_id,
        tenant_id=tenant_id,
        diff={"after": after},
        actor=Actor(ActorType.STAFF, staff.id, staff.email),
    )


def _key_summary(key: ApiKey) -> KeySummary:
    return KeySummary(
        id=key.id,
        name=key.name,
        livemode=key.livemode,
        prefix=key.prefix,
        last4=key.last4,
        created_at=key.created_at,
        last_used_at=key.last_used_at,
        expires_at=key.expires_at,
        revoked_at=key.revoked_at,
    )


def _suspension_history(tenant_id: str, limit: int) -> list[SuspensionRecord]:
    rows = db.session.scalars(
        select(AdminSuspension)
        .where(AdminSuspension.tenant_id == tenant_id)
        .order_by(AdminSuspension.suspended_at.desc())
        .limit(limit)
    ).all()
    staff_ids = {row.suspended_by for row in rows} | {row.reinstated_by for row in rows}
    emails = dict(
        db.session.execute(
            select(StaffUser.id, StaffUser.email).where(StaffUser.id.in_(staff_ids - {None}))
        ).all()
    )
    return [
        SuspensionRecord(
            reason=row.reason,
            suspended_at=row.suspended_at,
            suspended_by=emails.get(row.suspended_by, row.suspended_by),
            reinstated_at=row.reinstated_at,
            reinstated_by=emails.get(row.reinstated_by, row.reinstated_by),
        )
        for row in rows
    ]
