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

from sqlalchemy import func, select, update

from billing.models import Subscription, UsageCounter
from core.api import paginate
from core.errors import Conflict, NotFound
from core.extensions import db
from core.ids import new_id
from staff.models import AdminSuspension
from tenants.models import Member, MemberRole, Tenant, TenantStatus

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
    *, status: str | None, plan: str | None, email: str | None, limit: int, **cursor
) -> dict:
    """A page of tenants, newest first, filtered by status, plan and a fragment of any of
    their members' emails."""
    statement = select(Tenant)
    if status:
        statement = statement.where(Tenant.status == TenantStatus(status))
    if plan:
        statement = statement.where(Tenant.plan == plan)
    if email:
        fragment = email.strip().lower().replace("\\", "\\\\").replace("%", r"\%")
        fragment = fragment.replace("_", r"\_")
        statement = statement.where(
            Tenant.id.in_(
                select(Member.tenant_id).where(Member.email.like(f"%{fragment}%", escape="\\"))
            )
        )
    page = paginate(statement, Tenant.id, limit=limit, **cursor)
    page["data"] = [_view(tenant) for tenant in page["data"]]
    return page


def get_tenant_view(tenant_id: str) -> TenantView:
    tenant = db.session.get(Tenant, tenant_id)
    if tenant is None:
        raise NotFound("No such tenant.", param="tenant_id")
    return _view(tenant)


def suspend_tenant(tenant_id: str, *, reason: str, staff_id: str) -> TenantView:
    """Suspend a tenant for reason 'admin', recording the reason text and who (commits).
    A tenant suspended for billing becomes suspended by admin (paying no longer lifts it);
    one already suspended by an admin is a Conflict."""
    tenant = _locked(tenant_id)
    if tenant.status is TenantStatus.SUSPENDED and tenant.suspended_reason == SUSPENSION_REASON:
        db.session.rollback()
        raise Conflict("This tenant is already suspended.", code="tenant_already_suspended")
    tenant.status = TenantStatus.SUSPENDED
    tenant.suspended_reason = SUSPENSION_REASON
    db.session.add(
        AdminSuspension(id=new_id("sus"), tenant_id=tenant_id, reason=reason, suspended_by=staff_id)
    )
    db.session.commit()
    logger.warning("admin.tenant_suspended", extra={"tenant_id": tenant_id, "staff_id": staff_id})
    return get_tenant_view(tenant_id)


def reinstate_tenant(tenant_id: str, *, staff_id: str) -> TenantView:
    """Reactivate a suspended tenant, whatever suspended it (commits); an active one is a
    Conflict. Closes the open admin suspension record."""
    tenant = _locked(tenant_id)
    if tenant.status is TenantStatus.ACTIVE:
        db.session.rollback()
        raise Conflict("This tenant is not suspended.", code="tenant_not_suspended")
    tenant.status = TenantStatus.ACTIVE
    tenant.suspended_reason = None
    db.session.execute(
        update(AdminSuspension)
        .where(AdminSuspension.tenant_id == tenant_id, AdminSuspension.reinstated_at.is_(None))
        .values(reinstated_by=staff_id, reinstated_at=datetime.now(UTC))
    )
    db.session.commit()
    logger.warning("admin.tenant_reinstated", extra={"tenant_id": tenant_id, "staff_id": staff_id})
    return get_tenant_view(tenant_id)


def _locked(tenant_id: str) -> Tenant:
    tenant = db.session.scalar(select(Tenant).where(Tenant.id == tenant_id).with_for_update())
    if tenant is None:
        db.session.rollback()
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
    usage = dict(
        db.session.execute(
            select(UsageCounter.livemode, UsageCounter.used)
            .join(
                Subscription,
                (Subscription.tenant_id == UsageCounter.tenant_id)
                & (Subscription.current_period_start == UsageCounter.period_start),
            )
            .where(UsageCounter.tenant_id == tenant.id)
        ).all()
    )
    return TenantView(tenant, owner_email, suspension, usage.get(True, 0), usage.get(False, 0))
