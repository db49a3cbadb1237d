"""What a tenant's plan allows, for packages below billing that must enforce it.

Billing knows plans; webhooks (a sibling) caps endpoints by them. Billing provides the facts
here in its `init_app`, so no package imports a sibling to ask.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from flask import Flask, current_app

_PROVIDER = "lango.plan_limits"


@dataclass(frozen=True)
class PlanLimits:
    # None: no limit.
    max_webhook_endpoints: int | None


def provide_plan_limits(app: Flask, provider: Callable[[str], PlanLimits]) -> None:
    """`provider(tenant_id)` tells the tenant's limits; it may raise LookupError for a tenant
    without a plan."""
    app.extensions[_PROVIDER] = provider


def plan_limits(tenant_id: str) -> PlanLimits:
    """The tenant's limits; no limits when no package provides them."""
    provider = current_app.extensions.get(_PROVIDER)
    return provider(tenant_id) if provider else PlanLimits(max_webhook_endpoints=None)
