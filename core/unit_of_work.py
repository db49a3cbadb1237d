"""Where a transaction ends.

A request, a job and a CLI command are each one unit of work: services only `flush()`, and
the edge commits once, or rolls back once when an error escapes (Indico's request handlers).
The edges are here and nowhere else:

- a request: `init_app` commits after the view returns, or rolls back when an error handler
  answered (core.errors marks the request failed);
- a job: `core.jobs.app_job` runs the job in `unit_of_work()`;
- a command: commands are made with `core.commands.command` / `core.commands.group`, which
  run the command in `unit_of_work()`;
- a loop over tenants (a job or command visiting each tenant): `tenant_unit_of_work(t)`
  per tenant, so one tenant's failure is its own.

A commit in the middle of a unit is a `checkpoint(Checkpoint.…)`: one named call, used only
where the design needs something durable before the unit goes on — before an outside call
(the pending push before Daraja is called, a webhook delivery claimed before it is sent),
before parsing (a callback's raw body), before the work it guards (an idempotency claim), or
although the request then fails (a push Daraja refused, a failed sign-in's audit entry).
`Checkpoint` names each one. A grep for `commit()` outside this module finds none.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum

from flask import Flask, g

from core.extensions import db
from core.tenancy import TenantBinding, tenant_scope

logger = logging.getLogger("lango.units")

# Set on `g` by core.errors when an error handler answers the request: its unit rolls back.
REQUEST_FAILED = "lango_request_failed"


class Checkpoint(StrEnum):
    """Every commit in the middle of a unit of work, by name: the reason it must be durable
    before the unit goes on."""

    # The push row and its quota reservation exist before Daraja can take money for them.
    PENDING_PUSH = "pending push before Daraja is called"
    # What Daraja sent is kept even if parsing or applying it fails.
    RAW_CALLBACK = "callback body before it is parsed"
    # A failed staff sign-in stays in the audit trail although its request then fails.
    FAILED_SIGN_IN = "failed sign-in audited before the request fails"
    # A push Daraja refused stays failed, its reservation released, although its request fails.
    REFUSED_PUSH = "refused push failed before the request fails"
    # The Idempotency-Key is claimed before the work it protects starts, so a retry waits.
    IDEMPOTENCY_CLAIM = "idempotency claim before the work"
    # The response is stored under the Idempotency-Key before it is returned.
    IDEMPOTENCY_RESPONSE = "idempotent response before it is returned"
    # A webhook delivery is marked in flight before the HTTP request, and its outcome is
    # recorded before the next attempt is planned.
    DELIVERY_CLAIM = "webhook delivery claimed before it is sent"
    # The key's platform transaction ends before the request's tenant-bound ones begin.
    CALLER_RESOLVED = "API key resolved before the tenant transaction begins"
    # A Stripe event that failed to apply is recorded `failed`, although its request then
    # fails (500) so that Stripe delivers it again.
    STRIPE_EVENT_FAILED = "failed Stripe event recorded before the request fails"
    # A unit that works for two tenants (an invoice paid from the billing tenant's shortcode)
    # ends one tenant's transaction before the other's scope begins.
    TENANT_SWITCH = "one tenant's transaction ended before another tenant's scope"
    # `lango up`'s demo sign-ins are in the database before the file that names them.
    DEMO_SIGN_INS = "demo sign-ins stored before they are written down"
    # A read that visits tenant after tenant (the fraud-rule dry run) starts with none open.
    TENANT_BY_TENANT = "platform transaction ended before tenants are read one by one"


def checkpoint(name: Checkpoint) -> None:
    """Commit what the unit did so far (and begin afresh in the same tenant scope)."""
    logger.debug("checkpoint: %s", name)
    db.session.commit()


@contextmanager
def unit_of_work() -> Iterator[None]:
    """Commit once at the end of the block, or roll back once if it raises."""
    try:
        yield
    except BaseException:
        db.session.rollback()
        raise
    db.session.commit()


@contextmanager
def tenant_unit_of_work(tenant) -> Iterator[TenantBinding]:
    """`tenant_scope(tenant)` as one unit of work: committed before the scope ends (a scope
    rolls back whatever is left open when it ends)."""
    with tenant_scope(tenant) as binding, unit_of_work():
        yield binding


def init_app(app: Flask) -> None:
    @app.after_request
    def end_request_unit(response):
        # Before the response leaves, so a client that sees 2xx can rely on what it says.
        if g.pop(REQUEST_FAILED, False):
            db.session.rollback()
        else:
            db.session.commit()
        return response
