"""Dashboard: billing — the plan and its period, usage against the allowance, invoices, and
(owners only) changing plan and paying an invoice by M-Pesa.

Billing is per account, not per mode: live pushes count against the plan; test pushes have
their own monthly allowance. A tenant suspended for an unpaid invoice still reaches these
pages and pays from them (the member guard admits suspended tenants, and neither
billing.invoices.pay_invoice nor the reads here check the tenant's status).
"""

from __future__ import annotations

import json
import time

from flask import flash, g, redirect, render_template, request, url_for
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import RadioField, StringField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, ValidationError

from billing import collection
from billing import invoices as invoice_service
from billing import subscriptions as subscription_service
from billing import usage as usage_service
from billing.dunning import SUSPENSION_REASON
from billing.models import InvoiceStatus
from core.errors import LangoError
from core.phone import normalize_phone
from core.streams import capped_event_stream
from core.unit_of_work import unit_of_work
from frontend.auth import is_owner, require_role
from frontend.dashboard import bp
from frontend.dashboard.payments import STREAMS_PER_MEMBER
from frontend.errors import roll_back_request
from frontend.formatting import eat_date
from tenants.models import MemberRole

INVOICES_PER_PAGE = 12
# The invoice page follows an M-Pesa prompt for this long (the customer has about a minute
# to answer it; the sandbox and Daraja then report the outcome).
STREAM_POLL_SECONDS = 1.0
STREAM_MAX_POLLS = 120

# What the tenant reads about its latest M-Pesa prompt (payments.models.PushStatus values).
PAYMENT_TEXT = {
    None: "No M-Pesa payment started yet.",
    "pending": "Waiting for you to enter your M-Pesa PIN on the phone…",
    "succeeded": "Paid by M-Pesa. Thank you!",
    "failed": "The M-Pesa payment failed. You can try again.",
    "cancelled": "The M-Pesa prompt was cancelled on the phone. You can try again.",
    "expired": "The M-Pesa prompt expired. You can try again.",
}


class PlanForm(FlaskForm):
    plan = RadioField("Plan", validators=[DataRequired(message="Choose a plan.")])


def _kenyan_mobile(form, field) -> None:
    if normalize_phone(field.data or "") is None:
        raise ValidationError("Enter a Safaricom number, e.g. 0712 345 678 or 254712345678.")


class PayForm(FlaskForm):
    phone_number = StringField("M-Pesa phone number", validators=[DataRequired(), _kenyan_mobile])


# --- overview ----------------------------------------------------------------------------


@bp.get("/billing")
def billing():
    return _billing_page(_plan_form())


@bp.post("/billing/plan")
@require_role(MemberRole.OWNER)
def billing_plan():
    form = _plan_form()
    if not form.validate():
        return _billing_page(form, 400)
    before = subscription_service.get_subscription(g.tenant.id)
    previous_plan, previous_pending = before.plan.code, before.pending_plan_code
    try:
        after = subscription_service.update_subscription(
            g.tenant.id, actor_key_id=None, plan=form.plan.data
        )
    except LangoError as error:
        # Checking for a pending upgrade payment reads the billing tenant's schema, which
        # ends the transaction, so no savepoint can hold this call; and a Stripe refusal may
        # come after an awaited upgrade's invoice was voided.
        roll_back_request()
        if error.param == "plan":
            form.plan.errors = [*form.plan.errors, error.message]
        else:
            flash(error.message, "error")
        return _billing_page(form, error.status)
    flash(_plan_change_message(after, previous_plan, previous_pending), "success")
    if after.awaiting_invoice_id and after.awaiting_plan_code == form.plan.data:
        # The plan starts once this invoice is paid: its page has the M-Pesa form.
        return redirect(url_for("dashboard.billing_invoice", invoice_id=after.awaiting_invoice_id))
    return redirect(url_for("dashboard.billing"))


def _plan_change_message(after, previous_plan: str, previous_pending: str | None) -> str:
    if after.awaiting_invoice_id and after.awaiting_plan_code != previous_plan:
        awaited = subscription_service.get_plan(after.awaiting_plan_code, active_only=False)
        return (
            f"The {awaited.name} plan starts once its first month is paid: pay this invoice "
            f"by M-Pesa. Until then you stay on the {after.plan.name} plan."
        )
    if after.plan.code != previous_plan:
        return (
            f"You are on the {after.plan.name} plan from now on; its allowance applies to "
            "this period's usage so far."
        )
    if after.pending_plan_code:
        pending = subscription_service.get_plan(after.pending_plan_code, active_only=False)
        return (
            f"The {pending.name} plan starts when this period ends, on "
            f"{eat_date(after.current_period_end)}. Until then you keep {after.plan.name}."
        )
    if previous_pending:
        return f"Plan change cancelled: you stay on the {after.plan.name} plan."
    return f"You are already on the {after.plan.name} plan; nothing changed."


def _billing_page(form: PlanForm, status: int = 200):
    try:
        subscription = subscription_service.get_subscription(g.tenant.id)
    except LookupError:
        subscription = None
    usage = usage_service.current_usage(g.tenant.id) if subscription else None
    pending = awaiting = None
    if subscription is not None and subscription.pending_plan_code:
        pending = subscription_service.get_plan(subscription.pending_plan_code, active_only=False)
    if subscription is not None and subscription.awaiting_plan_code:
        awaiting = subscription_service.get_plan(subscription.awaiting_plan_code, active_only=False)
    cursor = {
        name: request.args[name]
        for name in ("starting_after", "ending_before")
        if request.args.get(name)
    }
    page = invoice_service.list_invoices(g.tenant.id, limit=INVOICES_PER_PAGE, **cursor)
    body = render_template(
        "dashboard/billing.html",
        subscription=subscription,
        usage=usage,
        pending=pending,
        awaiting=awaiting,
        invoices=page,
        plans=subscription_service.list_plans(),
        form=form,
        owner=is_owner(),
        suspended_for_billing=_suspended_for_billing(),
    )
    return body, status


def _plan_form() -> PlanForm:
    form = PlanForm()
    form.plan.choices = [
        SelectChoice(plan.code, plan.name) for plan in subscription_service.list_plans()
    ]
    if not form.is_submitted():
        try:
            form.plan.data = subscription_service.get_subscription(g.tenant.id).plan.code
        except LookupError:
            form.plan.data = None
    return form


# --- invoices ----------------------------------------------------------------------------


@bp.get("/billing/invoices/<invoice_id>")
def billing_invoice(invoice_id: str):
    return _invoice_page(invoice_id, PayForm())


@bp.post("/billing/invoices/<invoice_id>/pay")
@require_role(MemberRole.OWNER)
def billing_invoice_pay(invoice_id: str):
    invoice_service.get_invoice(g.tenant.id, invoice_id)  # another tenant's id: 404 page
    form = PayForm()
    if not form.validate():
        return _invoice_page(invoice_id, form, 400)
    phone = normalize_phone(form.phone_number.data)
    # No savepoint: paying switches to the billing tenant's schema between transactions, and
    # pay_invoice writes nothing of the payer's before it raises.
    try:
        invoice_service.pay_invoice(g.tenant.id, invoice_id, phone)
    except LangoError as error:
        flash(error.message, "error")
        return _invoice_page(invoice_id, form, error.status)
    flash(
        f"We sent an M-Pesa prompt for this invoice to {phone[:4]}•••••{phone[-3:]}. "
        "Enter your M-Pesa PIN on the phone to pay; this page shows the outcome.",
        "success",
    )
    return redirect(url_for("dashboard.billing_invoice", invoice_id=invoice_id))


@bp.get("/billing/invoices/<invoice_id>/payment")
def billing_invoice_payment(invoice_id: str):
    """Server-sent events: the invoice's status and its M-Pesa prompt's, once a second, until
    the invoice is paid or the prompt is answered (lango.js fills the page with them)."""
    tenant_id = g.tenant.id
    invoice_service.get_invoice(tenant_id, invoice_id)  # 404 before the stream starts

    def events():
        # The stream runs after the request's unit ended: each poll is a unit of its own, so
        # no transaction stays open while it sleeps.
        for _ in range(STREAM_MAX_POLLS):
            with unit_of_work():
                state = _payment_state(tenant_id, invoice_id)
            yield f"data: {json.dumps(state)}\n\n"
            if state["final"]:
                return
            time.sleep(STREAM_POLL_SECONDS)

    # Shares the member's stream slots with the payments pages: each holds a web thread.
    return capped_event_stream(f"member:{current_user.id}", STREAMS_PER_MEMBER, events())


def _invoice_page(invoice_id: str, form: PayForm, status: int = 200):
    invoice = invoice_service.get_invoice(g.tenant.id, invoice_id)
    push_id = invoice.mpesa_stk_push_id
    payment = collection.mpesa_payment_status(invoice_id, push_id)
    invoice = invoice_service.get_invoice(g.tenant.id, invoice_id)  # read after the rollback
    body = render_template(
        "dashboard/invoice.html",
        invoice=invoice,
        payment=payment,
        payment_text=PAYMENT_TEXT.get(payment, payment),
        following=invoice.status is InvoiceStatus.OPEN and payment == "pending",
        form=form,
        owner=is_owner(),
        payable=invoice.status is InvoiceStatus.OPEN and not invoice.stripe_invoice_id,
    )
    return body, status


def _payment_state(tenant_id: str, invoice_id: str) -> dict:
    invoice = invoice_service.get_invoice(tenant_id, invoice_id)
    status, push_id = invoice.status.value, invoice.mpesa_stk_push_id
    payment = collection.mpesa_payment_status(invoice_id, push_id)
    return {
        "status": status,
        "payment": payment,
        "payment_text": PAYMENT_TEXT.get(payment, payment),
        "final": status != InvoiceStatus.OPEN.value or payment not in (None, "pending"),
    }


def _suspended_for_billing() -> bool:
    return g.tenant.status == "suspended" and g.tenant.suspended_reason == SUSPENSION_REASON
