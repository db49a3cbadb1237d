"""Daraja's checks on STK push and STK query bodies, with Daraja's error for each.

Fields are checked in the order Daraja documents them and the first failure is answered,
as Daraja does. Numbers may arrive as JSON numbers or numeric strings (the official samples
send both, daraja.md §0); what the sandbox stores is normalised to strings and ints.
"""

from __future__ import annotations

import base64
import hmac
import re
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit

from payments.sandbox.errors import bad_request, invalid_payload, wrong_credentials

TRANSACTION_TYPES = ("CustomerPayBillOnline", "CustomerBuyGoodsOnline")
MAX_AMOUNT = 250_000  # the customer's per-transaction limit (daraja.md §5.4)
# ASCII digits only, matched in full (`\d` and `$` would admit other scripts' digits and a
# trailing newline).
_MSISDN = re.compile(r"254[71][0-9]{8}")
_SHORTCODE = re.compile(r"[0-9]{5,7}")
_TIMESTAMP = re.compile(r"[0-9]{14}")
_WHOLE_NUMBER = re.compile(r"[0-9]{1,9}")


@dataclass(frozen=True)
class Credentials:
    """The part every STK call shares: who the merchant is and the proof it knows the passkey."""

    shortcode: str
    password: str
    timestamp: str


@dataclass(frozen=True)
class PushRequest:
    credentials: Credentials
    transaction_type: str
    amount: int
    party_a: str
    party_b: str
    phone_number: str
    callback_url: str
    account_reference: str
    transaction_desc: str | None


@dataclass(frozen=True)
class QueryRequest:
    credentials: Credentials
    checkout_request_id: str


def parse_push(body) -> PushRequest:
    """Validate a processrequest body. Raises DarajaError (400.002.02 / 400.002.05)."""
    if not isinstance(body, dict):
        raise invalid_payload()
    credentials = _credentials(body)
    transaction_type = body.get("TransactionType")
    if transaction_type not in TRANSACTION_TYPES:
        raise bad_request("TransactionType")
    amount = _amount(body.get("Amount"))
    party_a = _msisdn(body.get("PartyA"), "PartyA")
    party_b = _digits(body.get("PartyB"), _SHORTCODE, "PartyB")
    phone_number = _msisdn(body.get("PhoneNumber"), "PhoneNumber")
    callback_url = _callback_url(body.get("CallBackURL"))
    account_reference = _text(body.get("AccountReference"), 12, "AccountReference")
    if not account_reference:
        raise bad_request("AccountReference")
    description = body.get("TransactionDesc")
    if description is not None:
        description = _text(description, 13, "TransactionDesc")
    return PushRequest(
        credentials=credentials,
        transaction_type=transaction_type,
        amount=amount,
        party_a=party_a,
        party_b=party_b,
        phone_number=phone_number,
        callback_url=callback_url,
        account_reference=account_reference,
        transaction_desc=description,
    )


def parse_query(body) -> QueryRequest:
    """Validate a stkpushquery body. Raises DarajaError (400.002.02 / 400.002.05)."""
    if not isinstance(body, dict):
        raise invalid_payload()
    credentials = _credentials(body)
    checkout_request_id = body.get("CheckoutRequestID")
    if not isinstance(checkout_request_id, str) or not checkout_request_id.strip():
        raise bad_request("CheckoutRequestID")
    return QueryRequest(credentials, checkout_request_id.strip())


def expected_password(shortcode: str, passkey: str, timestamp: str) -> str:
    """base64(BusinessShortCode + Passkey + Timestamp), plain concatenation (daraja.md §2.1)."""
    return base64.b64encode(f"{shortcode}{passkey}{timestamp}".encode()).decode()


def check_password(credentials: Credentials, passkey: str) -> None:
    """Raises 500.001.1001 "Wrong credentials" unless the Password was built from this
    shortcode, `passkey` and the request's own Timestamp."""
    expected = expected_password(credentials.shortcode, passkey, credentials.timestamp)
    if not hmac.compare_digest(credentials.password.encode(), expected.encode()):
        raise wrong_credentials()


def _credentials(body: dict) -> Credentials:
    shortcode = _digits(body.get("BusinessShortCode"), _SHORTCODE, "BusinessShortCode")
    password = body.get("Password")
    if not isinstance(password, str) or not password:
        raise bad_request("Password")
    timestamp = _as_text(body.get("Timestamp"))
    if timestamp is None or not _TIMESTAMP.fullmatch(timestamp) or not _is_date(timestamp):
        raise bad_request("Timestamp")
    return Credentials(shortcode, password, timestamp)


def _as_text(value) -> str | None:
    """A JSON number or string as its text; None for anything else (bools included)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return value
    return None


def _digits(value, pattern: re.Pattern, field: str) -> str:
    text = _as_text(value)
    if text is None or not pattern.fullmatch(text):
        raise bad_request(field)
    return text


def _msisdn(value, field: str) -> str:
    return _digits(value, _MSISDN, field)


def _amount(value) -> int:
    # Strict on purpose: Daraja rejects decimals, and a sandbox that accepted 100.0 would hide
    # a bug that only production reveals. Integral JSON numbers and digit strings pass.
    text = _as_text(value)
    if text is None or not _WHOLE_NUMBER.fullmatch(text):
        raise bad_request("Amount")
    amount = int(text)
    if not 1 <= amount <= MAX_AMOUNT:
        raise bad_request("Amount")
    return amount


def _callback_url(value) -> str:
    # Unlike Daraja, loopback and private hosts are allowed: Lango and tenants' development
    # servers run locally.
    if not isinstance(value, str) or not value or any(ch.isspace() for ch in value):
        raise bad_request("CallBackURL")
    parts = urlsplit(value)
    try:
        parts.port  # noqa: B018 (raises ValueError for a port out of range)
    except ValueError:
        raise bad_request("CallBackURL") from None
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise bad_request("CallBackURL")
    return value


def _text(value, limit: int, field: str) -> str:
    text = _as_text(value)
    if text is None or len(text) > limit:
        raise bad_request(field)
    return text


def _is_date(timestamp: str) -> bool:
    try:
        datetime.strptime(timestamp, "%Y%m%d%H%M%S")
    except ValueError:
        return False
    return True
