"""What the sandbox does behind each Daraja endpoint: issue tokens, accept pushes, answer
queries. Plain functions over the config and the store; routes.py does the HTTP.

A push's outcome is decided when it is accepted (the phone number picks it) and becomes
final at its due time, `CALLBACK_DELAY` after acceptance. "Final" is derived from the clock
and the due time stored in Redis, never from whether a callback went out, so a query is
right even for the no-callback number and after the sandbox restarts.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import time
from datetime import UTC, datetime
from urllib.parse import urlsplit

from payments.sandbox import errors
from payments.sandbox.config import SandboxConfig
from payments.sandbox.identifiers import (
    access_token,
    checkout_request_id,
    new_request_id,
    receipt_number,
    transaction_date,
)
from payments.sandbox.outcomes import Delivery, outcome_for
from payments.sandbox.store import TOKEN_TTL_SECONDS, SandboxStore
from payments.sandbox.validation import PushRequest, QueryRequest, check_password

ACCEPTED = "Success. Request accepted for processing"
# Daraja's own spelling, triple "s" included (daraja.md §4): clients match on it.
QUERY_ACCEPTED = "The service request has been accepted successsfully"
# The duplicate-callback number's second copy follows the first by this much.
DUPLICATE_GAP_SECONDS = 0.5


class InvalidClient(Exception):
    """Wrong consumer key or secret: Daraja answers HTTP 400 with an empty body."""


def issue_token(
    config: SandboxConfig, store: SandboxStore, authorization: str | None, grant_type: str | None
) -> dict:
    """A new access token valid for 3600 s. Older tokens stay valid until they expire (the
    FAQ's "each request invalidates the previous token" is single-source and no client
    relies on it; keeping them valid lets several Lango processes each hold one).
    Raises DarajaError 400.008.01 / 400.008.02, or InvalidClient."""
    scheme, _, encoded = (authorization or "").partition(" ")
    if scheme.lower() != "basic" or not encoded.strip():
        raise errors.DarajaError("400.008.01", "Invalid authentication type passed")
    if grant_type != "client_credentials":
        raise errors.DarajaError("400.008.02", "Invalid grant type passed")
    try:
        key, _, secret = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        raise InvalidClient() from None
    known = hmac.compare_digest(key.encode(), config.SANDBOX_CONSUMER_KEY.encode())
    known &= hmac.compare_digest(secret.encode(), config.SANDBOX_CONSUMER_SECRET.encode())
    if not known:
        raise InvalidClient()
    token = access_token()
    store.save_token(token)
    expires_in = TOKEN_TTL_SECONDS - 1
    return {
        "access_token": token,
        "expires_in": expires_in if config.SANDBOX_EXPIRES_IN_AS_NUMBER else str(expires_in),
    }


def authenticate(store: SandboxStore, authorization: str | None) -> None:
    """Raises 404.001.03 "Invalid Access Token" unless a live Bearer token is presented."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not store.token_is_valid(token.strip()):
        raise errors.invalid_access_token()


def check_merchant(config: SandboxConfig, request: PushRequest | QueryRequest) -> None:
    """Raises 500.001.1001: "Merchant does not exist" for a shortcode the sandbox does not
    know, "Wrong credentials" for a Password not built from its passkey and Timestamp."""
    if request.credentials.shortcode != config.SANDBOX_SHORTCODE:
        raise errors.merchant_does_not_exist()
    check_password(request.credentials, config.SANDBOX_PASSKEY)


def accept_push(
    config: SandboxConfig, store: SandboxStore, request: PushRequest, now: float | None = None
) -> dict:
    """Record a push and schedule its callbacks; returns the stored push.

    Raises 500.001.1001 "Unable to lock subscriber…" for the lock magic number, and (with
    SANDBOX_SUBSCRIBER_LOCK) when an earlier push to the same number is not yet final. The
    lock is taken atomically in Redis, so concurrent pushes across processes get one winner.
    """
    check_merchant(config, request)
    outcome = outcome_for(request.phone_number)
    if outcome.refused_at_once:
        raise errors.subscriber_locked()
    now = time.time() if now is None else now
    due_at = now + config.SANDBOX_CALLBACK_DELAY_SECONDS
    accepted_at = datetime.fromtimestamp(now, UTC)
    decided_at = datetime.fromtimestamp(due_at, UTC)
    push = {
        "checkout_request_id": checkout_request_id(accepted_at, request.phone_number),
        "merchant_request_id": new_request_id(),
        "business_short_code": request.credentials.shortcode,
        "transaction_type": request.transaction_type,
        "amount": request.amount,
        "party_a": request.party_a,
        "party_b": request.party_b,
        "phone_number": request.phone_number,
        "callback_url": request.callback_url,
        "account_reference": request.account_reference,
        "transaction_desc": request.transaction_desc,
        "created_at": now,
        "due_at": due_at,
        "result_code": outcome.result_code,
        "result_desc": outcome.result_desc,
        "delivery": outcome.delivery.value,
        "mpesa_receipt_number": receipt_number(decided_at) if outcome.succeeded else None,
        "transaction_date": transaction_date(decided_at) if outcome.succeeded else None,
        "callbacks_due": _callback_times(config, outcome.delivery, now, due_at),
    }
    if config.SANDBOX_SUBSCRIBER_LOCK and not store.lock_subscriber(
        request.phone_number, push["checkout_request_id"], due_at - now
    ):
        raise errors.subscriber_locked()
    _save_with_unique_id(store, push, accepted_at)
    store.schedule_callbacks(push["checkout_request_id"], push["callbacks_due"])
    return push


def push_accepted_response(push: dict) -> dict:
    return {
        "MerchantRequestID": push["merchant_request_id"],
        "CheckoutRequestID": push["checkout_request_id"],
        "ResponseCode": "0",
        "ResponseDescription": ACCEPTED,
        "CustomerMessage": ACCEPTED,
    }


def query_push(
    config: SandboxConfig, store: SandboxStore, request: QueryRequest, now: float | None = None
) -> dict:
    """The STK query answer for a final push (codes as strings, as Daraja sends them).

    Raises 400.002.02 "Invalid CheckoutRequestID" for a push this merchant never made, and
    HTTP 500 "The transaction is being processed" (requestId = CheckoutRequestID) until the
    push's due time."""
    check_merchant(config, request)
    push = store.load_push(request.checkout_request_id)
    if push is None or push["business_short_code"] != request.credentials.shortcode:
        raise errors.bad_request("CheckoutRequestID")
    if not is_final(push, now):
        raise errors.being_processed(push["checkout_request_id"])
    return {
        "ResponseCode": "0",
        "ResponseDescription": QUERY_ACCEPTED,
        "MerchantRequestID": push["merchant_request_id"],
        "CheckoutRequestID": push["checkout_request_id"],
        "ResultCode": str(push["result_code"]),
        "ResultDesc": push["result_desc"],
    }


def is_final(push: dict, now: float | None = None) -> bool:
    return (time.time() if now is None else now) >= push["due_at"]


def describe_push(store: SandboxStore, checkout_request_id: str) -> dict | None:
    """A push as the debugging endpoint shows it: request, outcome and callback attempts.
    The callback URL is cut to its origin: its path usually carries the receiver's secret."""
    push = store.load_push(checkout_request_id)
    if push is None:
        return None
    request_fields = (
        "business_short_code",
        "transaction_type",
        "amount",
        "party_a",
        "party_b",
        "phone_number",
        "account_reference",
        "transaction_desc",
    )
    return {
        "checkout_request_id": push["checkout_request_id"],
        "merchant_request_id": push["merchant_request_id"],
        "request": {
            **{name: push[name] for name in request_fields},
            "callback_origin": _origin(push["callback_url"]),
        },
        "created_at": _iso(push["created_at"]),
        "final_at": _iso(push["due_at"]),
        "final": is_final(push),
        "outcome": {
            "result_code": push["result_code"],
            "result_desc": push["result_desc"],
            "mpesa_receipt_number": push["mpesa_receipt_number"],
            "transaction_date": push["transaction_date"],
            "callback_delivery": push["delivery"],
        },
        "callbacks_scheduled": [_iso(due) for due in push["callbacks_due"]],
        "callback_attempts": store.attempts(checkout_request_id),
    }


def _callback_times(
    config: SandboxConfig, delivery: Delivery, now: float, due_at: float
) -> list[float]:
    if delivery is Delivery.NEVER:
        return []
    if delivery is Delivery.TWICE:
        return [due_at, due_at + DUPLICATE_GAP_SECONDS]
    if delivery is Delivery.LATE:
        return [max(due_at, now + config.SANDBOX_LATE_CALLBACK_SECONDS)]
    return [due_at]


def _save_with_unique_id(store: SandboxStore, push: dict, accepted_at: datetime) -> None:
    # The id is the acceptance millisecond plus the phone number; two pushes to one number in
    # the same millisecond (possible with the subscriber lock off) take the next free one.
    for step in range(1, 1000):
        if store.save_push(push):
            return
        later = datetime.fromtimestamp(accepted_at.timestamp() + step / 1000, UTC)
        push["checkout_request_id"] = checkout_request_id(later, push["phone_number"])
    raise errors.internal_error()


def _origin(url: str) -> str:
    parts = urlsplit(url)  # hostname/port only: user:password@ must not leak either
    host = f"[{parts.hostname}]" if ":" in (parts.hostname or "") else parts.hostname
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}"


def _iso(epoch: float) -> str:
    return (
        datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )
