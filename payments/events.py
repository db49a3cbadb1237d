"""The events payments records, and the payload each carries, built here by the domain that
owns the push (not by an API schema): `{"object": push_object(push)}`.

Webhook endpoints receive this object as it is, so it is the API's STK push object field for
field (payments.schemas.StkPushSchema; a test holds the two equal). Subscribers read it too:
billing settles an invoice from `metadata.lango_invoice_id`, compliance counts cancellations
by `phone_number`.
"""

from __future__ import annotations

from datetime import UTC, datetime

from core.events import EventType, record_event
from payments.models import PushStatus, StkPush

# The event a push's final status records.
FINAL_EVENTS = {
    PushStatus.SUCCEEDED: EventType.PAYMENT_SUCCEEDED,
    PushStatus.FAILED: EventType.PAYMENT_FAILED,
    PushStatus.CANCELLED: EventType.PAYMENT_CANCELLED,
    PushStatus.EXPIRED: EventType.PAYMENT_EXPIRED,
}


def record_push_finished(push: StkPush) -> None:
    """`payment.succeeded|failed|cancelled|expired`, in the transaction that made it final."""
    record_event(FINAL_EVENTS[push.status], {"object": push_object(push)}, livemode=push.livemode)


def record_push_flagged(push: StkPush) -> None:
    """`payment.flagged`: a report from M-Pesa was held; `flagged_reason` says why."""
    record_event(EventType.PAYMENT_FLAGGED, {"object": push_object(push)}, livemode=push.livemode)


def push_object(push: StkPush) -> dict:
    """The push as the API shows it (JSON-ready: times are UTC text with a `Z`)."""
    return {
        "id": push.id,
        "object": "stk_push",
        "status": push.status.value,
        "livemode": push.livemode,
        "phone_number": push.phone_number,
        "amount": push.amount,
        "account_reference": push.account_reference,
        "description": push.description,
        "metadata": push.metadata_,
        "mpesa_receipt_number": push.mpesa_receipt_number,
        "result_code": push.result_code,
        "result_description": push.result_description,
        "checkout_request_id": push.checkout_request_id,
        "transaction_date": _utc_text(push.transaction_date),
        "flagged_reason": push.flagged_reason,
        "expired_at": _utc_text(push.expired_at),
        "created": _utc_text(push.created_at),
        "updated": _utc_text(push.updated_at),
    }


def _utc_text(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
