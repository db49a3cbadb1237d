"""What billing needs from a package above it, as an interface that package implements.

Billing collects an invoice by M-Pesa with an STK push of the billing tenant (the platform's
own tenant, settings.BILLING_TENANT_ID), but STK pushes are payments', and payments sits above
billing: billing may not import it. So billing states here what it needs (`InvoiceCollector`)
and payments registers an implementation in its `init_app` (`provide_invoice_collector`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from flask import Flask, current_app

_COLLECTOR = "lango.billing.invoice_collector"


@dataclass(frozen=True)
class InvoicePush:
    """The STK push that collects one invoice."""

    phone_number: str  # normalised by core.phone (254…)
    amount: int  # whole KES, the invoice's total
    account_reference: str
    description: str
    # {"lango_invoice_id": …, "lango_tenant_id": …}: how billing finds the push again, and
    # how its payment.succeeded event settles the invoice (billing.invoices).
    metadata: dict[str, str]
    livemode: bool  # live when the platform takes live payments; else the Daraja sandbox


class InvoiceCollectionRefused(Exception):
    """The billing tenant may not send this push (live mode not enabled for it, say): the
    platform's own account is misconfigured, not the paying tenant's doing."""


class InvoiceCollector(Protocol):
    """STK pushes of the billing tenant. Every method runs in the billing tenant's scope, which
    billing enters, and in the caller's transaction: billing commits (or rolls back) what it
    leaves."""

    # The most one M-Pesa payment may be, whole KES: a larger invoice cannot be collected.
    max_amount: int

    def start_push(self, push: InvoicePush) -> str:
        """Send the push as the billing tenant and return its id (`stk_…`), as
        POST /v1/stk-pushes would (quota, screening, Daraja). Raises
        InvoiceCollectionRefused when the billing tenant may not send it; billing's own
        QuotaExceeded / PlanExcludesLivemode and Daraja's errors (LangoError) pass through."""
        ...

    def pending_push(self, invoice_id: str) -> str | None:
        """The id of a pending push whose metadata carries `lango_invoice_id` = invoice_id,
        if there is one."""
        ...

    def push_status(self, invoice_id: str, stk_push_id: str) -> str | None:
        """The status (`pending`, `succeeded`, `failed`, …) of push `stk_push_id` if its
        metadata carries `lango_invoice_id` = invoice_id; None otherwise."""
        ...


def provide_invoice_collector(app: Flask, collector: InvoiceCollector) -> None:
    app.extensions[_COLLECTOR] = collector


def invoice_collector() -> InvoiceCollector | None:
    """The registered collector; None where no package provides one (invoices then cannot be
    paid by M-Pesa)."""
    return current_app.extensions.get(_COLLECTOR)
