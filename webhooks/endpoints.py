"""Webhook endpoints (tenant schema): create, change, disable, rotate their signing secrets.

Each endpoint belongs to one mode (the key that made it decides); a key only ever sees
endpoints of its own mode. Secrets are stored encrypted (core.crypto) and are returned in
plaintext only by the call that issues them (create, rotate).

Every change sends `core.changes.endpoint_changed` in its own transaction, with `change`
("created", "updated", "deleted"), `tenant_id` and the `before`/`after` settings: compliance
audits it (webhooks never imports compliance; a receiver that raises undoes the change).
Nothing here commits: the caller's unit of work (the request) does.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from flask import current_app
from sqlalchemy import func, select, text, update

from core import crypto
from core.changes import endpoint_changed
from core.errors import NotFound, PermissionDenied, ValidationFailed
from core.events import EventType
from core.extensions import db
from core.ids import new_id
from core.plan_limits import plan_limits
from core.tenancy import require_tenant
from webhooks import service, signing, ssrf
from webhooks.models import DeliveryStatus, WebhookDelivery, WebhookEndpoint

# The event types an endpoint may subscribe to; "*" means every type, present and future.
EVENT_TYPES = tuple(event_type.value for event_type in EventType)
ALL_EVENTS = "*"


def audited_state(endpoint: WebhookEndpoint) -> dict:
    """The settings an audit diff shows (never the secret)."""
    return {
        "url": endpoint.url,
        "enabled_events": list(endpoint.enabled_events),
        "description": endpoint.description,
        "enabled": endpoint.enabled,
        "livemode": endpoint.livemode,
    }


class EndpointLimitReached(PermissionDenied):
    code = "endpoint_limit_reached"
    message = "The plan's webhook endpoint limit is reached."


@dataclass(frozen=True)
class IssuedEndpoint:
    """An endpoint with its plaintext secret, for the one answer that shows it."""

    endpoint: WebhookEndpoint
    secret: str

    def __getattr__(self, name: str):
        return getattr(self.endpoint, name)


def create_endpoint(
    *,
    livemode: bool,
    url: str,
    enabled_events: list[str],
    description: str | None = None,
    enabled: bool = True,
) -> IssuedEndpoint:
    """Create an endpoint of the given mode with a fresh secret. Raises ValidationFailed
    (unsafe URL) or EndpointLimitReached."""
    _check_url(url, livemode=livemode)
    tenant_id = require_tenant().tenant_id
    # One creation at a time per tenant, so concurrent requests cannot pass the limit.
    db.session.execute(
        text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"),
        {"key": f"webhook-endpoints:{tenant_id}"},
    )
    _check_limit(tenant_id)
    secret = signing.new_secret()
    now = datetime.now(UTC)
    endpoint = WebhookEndpoint(
        id=new_id("we"),
        livemode=livemode,
        url=url,
        description=description,
        enabled_events=normalize_events(enabled_events),
        enabled=enabled,
        disabled_reason=None if enabled else "manual",
        secret_encrypted=crypto.encrypt(secret),
        created_at=now,
        updated_at=now,
    )
    db.session.add(endpoint)
    db.session.flush()
    endpoint_changed.send(
        endpoint, change="created", tenant_id=tenant_id, after=audited_state(endpoint)
    )
    return IssuedEndpoint(endpoint, secret)


def list_endpoints_statement(*, livemode: bool):
    return select(WebhookEndpoint).where(WebhookEndpoint.livemode == livemode)


def get_endpoint(endpoint_id: str, *, livemode: bool, for_update: bool = False) -> WebhookEndpoint:
    """The endpoint of this mode, or NotFound (also for the other mode's endpoints)."""
    statement = select(WebhookEndpoint).where(
        WebhookEndpoint.id == endpoint_id, WebhookEndpoint.livemode == livemode
    )
    if for_update:
        statement = statement.with_for_update()
    endpoint = db.session.scalars(statement).one_or_none()
    if endpoint is None:
        raise NotFound(f"No such webhook endpoint: {endpoint_id!r}.", param="id")
    return endpoint


def endpoints_by_id(endpoint_ids, *, livemode: bool) -> dict[str, WebhookEndpoint]:
    """The endpoints of this mode among `endpoint_ids`, by id (deleted ones are absent).
    Read-only: the dashboard names each delivery's endpoint with it."""
    ids = list(set(endpoint_ids))
    if not ids:
        return {}
    rows = db.session.scalars(
        select(WebhookEndpoint).where(
            WebhookEndpoint.id.in_(ids), WebhookEndpoint.livemode == livemode
        )
    )
    return {endpoint.id: endpoint for endpoint in rows}


def update_endpoint(endpoint_id: str, *, livemode: bool, **changes) -> WebhookEndpoint:
    """Change url, enabled_events, description and/or enabled. Disabling records the reason
    "manual"; re-enabling a disabled endpoint forgets its failure run and redelivers what it
    missed meanwhile."""
    endpoint = get_endpoint(endpoint_id, livemode=livemode, for_update=True)
    before = audited_state(endpoint)
    if "url" in changes:
        _check_url(changes["url"], livemode=livemode)
        endpoint.url = changes["url"]
    if "enabled_events" in changes:
        endpoint.enabled_events = normalize_events(changes["enabled_events"])
    if "description" in changes:
        endpoint.description = changes["description"]
    # What it missed: since its failure run began, else since it was disabled.
    missed_since = endpoint.failing_since or endpoint.updated_at
    reenabled = changes.get("enabled") is True and not endpoint.enabled
    if reenabled:
        endpoint.enabled = True
        endpoint.disabled_reason = None
        endpoint.failing_since = None
    elif changes.get("enabled") is False and endpoint.enabled:
        endpoint.enabled = False
        endpoint.disabled_reason = "manual"
    endpoint.updated_at = datetime.now(UTC)
    if reenabled:
        # Same transaction: the endpoint is enabled by the time the replayed jobs run.
        service.redeliver_missed(endpoint, since=missed_since)
    endpoint_changed.send(
        endpoint,
        change="updated",
        tenant_id=require_tenant().tenant_id,
        before=before,
        after=audited_state(endpoint),
    )
    db.session.flush()
    return endpoint


def delete_endpoint(endpoint_id: str, *, livemode: bool) -> WebhookEndpoint:
    """Delete the endpoint; its pending deliveries are marked failed in the same transaction
    (a delivery job that still runs finds no endpoint and does nothing)."""
    endpoint = get_endpoint(endpoint_id, livemode=livemode, for_update=True)
    db.session.execute(
        update(WebhookDelivery)
        .where(
            WebhookDelivery.endpoint_id == endpoint.id,
            WebhookDelivery.status == DeliveryStatus.PENDING,
        )
        .values(status=DeliveryStatus.FAILED, next_attempt_at=None)
    )
    db.session.delete(endpoint)
    endpoint_changed.send(
        endpoint,
        change="deleted",
        tenant_id=require_tenant().tenant_id,
        before=audited_state(endpoint),
    )
    db.session.flush()
    return endpoint


def rotate_secret(endpoint_id: str, *, livemode: bool, grace: timedelta) -> IssuedEndpoint:
    """Issue a new secret; the current one keeps signing alongside it for `grace` (zero:
    it stops at once). A secret still in an earlier grace period is dropped."""
    endpoint = get_endpoint(endpoint_id, livemode=livemode, for_update=True)
    secret = signing.new_secret()
    now = datetime.now(UTC)
    if grace > timedelta(0):
        endpoint.previous_secret_encrypted = endpoint.secret_encrypted
        endpoint.previous_secret_expires_at = now + grace
    else:
        endpoint.previous_secret_encrypted = None
        endpoint.previous_secret_expires_at = None
    endpoint.secret_encrypted = crypto.encrypt(secret)
    endpoint.updated_at = now
    db.session.flush()
    return IssuedEndpoint(endpoint, secret)


def send_test_event(endpoint_id: str, *, livemode: bool):
    """Send a `ping` event to the endpoint (delivered like any other event)."""
    return service.send_ping(get_endpoint(endpoint_id, livemode=livemode))


def normalize_events(enabled_events: list[str]) -> list[str]:
    """Deduplicated, in the given order; any list naming "*" is just ["*"]."""
    if ALL_EVENTS in enabled_events:
        return [ALL_EVENTS]
    return list(dict.fromkeys(enabled_events))


def _check_url(url: str, *, livemode: bool) -> None:
    settings = current_app.extensions["lango.settings"]
    try:
        ssrf.check_url(url, livemode=livemode, allow_private=settings.WEBHOOK_ALLOW_PRIVATE_TARGETS)
    except ssrf.UnsafeTarget as refused:
        raise ValidationFailed(
            f"url: {refused}", param="url", errors={"url": [str(refused)]}
        ) from None


def _check_limit(tenant_id: str) -> None:
    try:
        limit = plan_limits(tenant_id).max_webhook_endpoints
    except LookupError:  # a tenant without a plan: no limit applies
        return
    if limit is None:
        return
    # Both modes count: the plan's allowance is per account, as Stripe's is.
    count = db.session.scalar(select(func.count()).select_from(WebhookEndpoint))
    if count >= limit:
        raise EndpointLimitReached(
            f"Your plan allows {limit} webhook endpoints; delete one or upgrade the plan.",
            limit=limit,
        )
