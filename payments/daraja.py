"""Lango's client for Safaricom's Daraja API: OAuth, STK push and STK push query.

One `DarajaClient` per credential set; it is cheap to build (the state worth sharing lives
in Redis):
- the OAuth token, cached per (base URL, consumer key) until shortly before it expires and
  refreshed under a Redis lock, so any number of threads and processes make one OAuth call;
- a circuit breaker per base URL (payments/circuit.py), so when Daraja is down every worker
  fails fast together instead of each waiting out its own timeouts.

Every failure comes out as a `DarajaError`: `DarajaRejected` when Daraja answered and refused,
`DarajaUnavailable` when it could not be reached or did not answer usefully. No requests, JSON
or Redis exception escapes. Phone numbers are masked in logs; secrets, passwords and tokens
are never logged, and are scrubbed from any message Daraja echoes back.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import requests
from redis import Redis
from redis.exceptions import LockError, RedisError
from urllib3.exceptions import NewConnectionError

from core.phone import mask_phone
from payments.circuit import CircuitOpen, RedisCircuitBreaker

logger = logging.getLogger("lango.payments.daraja")

# Daraja's Timestamp (and so the Password) is East Africa Time; offshore servers that send
# their local or UTC time get "Wrong credentials".
EAT = ZoneInfo("Africa/Nairobi")

OAUTH_PATH = "/oauth/v1/generate"
STK_PUSH_PATH = "/mpesa/stkpush/v1/processrequest"
STK_QUERY_PATH = "/mpesa/stkpushquery/v1/query"

# Codes meaning "this access token is not (or no longer) valid"; HTTP 401 means the same.
_TOKEN_ERROR_CODES = {"404.001.03", "401.002.01", "400.003.01", "401.003.01"}
_PENDING_CODE = "500.001.1001"
_PENDING_MESSAGE = "being processed"
# Throttling per consumer key (one tenant's app), not an outage: it must not open the
# circuit that every tenant on the same base URL shares.
_QUOTA_CODE = "500.003.03"
# Refresh this long before Daraja says the token expires, so no call carries a token that
# expires in flight.
TOKEN_MARGIN_SECONDS = 60
_DEFAULT_EXPIRES_IN = 300  # when Daraja's expires_in is unreadable: cache briefly

_MSISDN = re.compile(r"^254[17]\d{8}$")
# ResultCode as text: digits ("0", "1032"), or an upper-case code ("SFC_IC0003", daraja.md
# §3.3); it fits the push's result_code column.
_RESULT_CODE = re.compile(r"^(0|[1-9]\d{0,8}|[A-Z][A-Z0-9_]{0,19})$")
_MAX_ACCOUNT_REFERENCE = 12
_MAX_DESCRIPTION = 13

_DELETE_IF_EQUAL = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


@dataclass(frozen=True)
class DarajaCredentials:
    """One Daraja app plus the shortcode it pushes for. Secrets are kept out of repr().

    Paybill: BusinessShortCode = PartyB = shortcode. Till (Buy Goods): BusinessShortCode =
    shortcode (the store/HO number from Go-Live), PartyB = till_number.
    """

    base_url: str
    consumer_key: str = field(repr=False)
    consumer_secret: str = field(repr=False)
    shortcode: str
    passkey: str = field(repr=False)
    kind: Literal["paybill", "till"] = "paybill"
    till_number: str | None = None

    def __post_init__(self) -> None:
        if urlsplit(self.base_url).scheme not in {"http", "https"}:
            raise ValueError("base_url must be an http(s) URL")
        if self.kind not in {"paybill", "till"}:
            raise ValueError("kind must be 'paybill' or 'till'")
        if self.kind == "till" and not self.till_number:
            raise ValueError("a till needs its till_number")


@dataclass(frozen=True)
class StkPushAccepted:
    """Daraja accepted the push; the outcome arrives later (callback or query)."""

    merchant_request_id: str
    checkout_request_id: str
    response_code: str
    response_description: str
    customer_message: str


@dataclass(frozen=True)
class StkQueryResult:
    """`pending` while the customer has not acted; otherwise Daraja's ResultCode (a string,
    e.g. "0", "1032") and ResultDesc. `raw` is Daraja's JSON answer as received."""

    pending: bool
    result_code: str | None
    result_description: str | None
    raw: dict


class DarajaError(Exception):
    """A Daraja call failed. `error_code`/`request_id` are Daraja's (None when the failure
    is ours: timeout, connection, circuit open). `maybe_processed` is True when the request
    may have reached Daraja and been acted on (read timeout, connection dropped after
    sending, a malformed success, a 502/504 from a gateway): for an STK push the customer
    may still get the prompt, so its callback can still arrive."""

    def __init__(
        self,
        message: str,
        *,
        error_code: str | None = None,
        http_status: int | None = None,
        request_id: str | None = None,
        maybe_processed: bool = False,
    ):
        super().__init__(f"{error_code} {message}" if error_code else message)
        self.error_code = error_code
        self.error_message = message
        self.http_status = http_status
        self.request_id = request_id
        self.maybe_processed = maybe_processed


class DarajaRejected(DarajaError):
    """Daraja answered and refused: bad field, wrong credentials, unknown merchant,
    subscriber locked, invalid token after one refresh. Retrying as-is will not help."""


class DarajaUnavailable(DarajaError):
    """Daraja could not be reached or did not answer usefully: timeout, connection error,
    gateway fault, non-JSON answer, system busy, spike arrest, quota, 5xx, circuit open."""


class _TokenRejected(DarajaRejected):
    """The access token was refused; the caller refreshes it once and retries."""


class DarajaClient:
    """Talks to one Daraja base URL with one credential set. Thread-safe as long as the
    `session` is not shared with other threads (by default each client has its own).

    `timeout` (connect, read) applies to every HTTP call. `breaker` defaults to the circuit
    shared by every client of the same base URL (`daraja_breaker`). `clock` (wall-clock
    seconds) builds the Timestamp and drives the breaker; tests inject one. `key_prefix`
    namespaces every Redis key this client writes.
    """

    def __init__(
        self,
        credentials: DarajaCredentials,
        redis: Redis,
        *,
        session: requests.Session | None = None,
        timeout: tuple[float, float] = (3.05, 15.0),
        breaker: RedisCircuitBreaker | None = None,
        clock: Callable[[], float] = time.time,
        key_prefix: str = "lango:daraja",
    ):
        self.credentials = credentials
        self._redis = redis
        self._session = session or requests.Session()
        self._timeout = timeout
        self._clock = clock
        self._base_url = credentials.base_url.rstrip("/")
        self._breaker = breaker or daraja_breaker(
            redis, self._base_url, clock=clock, key_prefix=key_prefix, timeout=timeout
        )
        credential_id = _digest(f"{self._base_url}\n{credentials.consumer_key}")
        self._token_key = f"{key_prefix}:token:{credential_id}"
        self._token_lock_key = f"{self._token_key}:lock"
        # Long enough for one OAuth call to finish (connect + read timeouts).
        self._token_lock_seconds = sum(timeout) + 5.0
        self._forget_script = redis.register_script(_DELETE_IF_EQUAL)

    # --- OAuth ------------------------------------------------------------------------

    def access_token(self) -> str:
        """A valid access token: the cached one, or a fresh one fetched by exactly one caller
        across all threads and processes (the others wait on a Redis lock and re-read).
        Raises DarajaRejected (bad consumer key/secret) or DarajaUnavailable."""
        token = self._cached_token()
        if token:
            return token
        lock = self._redis.lock(
            self._token_lock_key,
            timeout=self._token_lock_seconds,
            blocking_timeout=self._token_lock_seconds,
        )
        try:
            acquired = lock.acquire()
        except RedisError as error:
            raise DarajaUnavailable("token cache unavailable") from error
        if not acquired:
            token = self._cached_token()
            if token:
                return token
            raise DarajaUnavailable("timed out waiting for another worker's OAuth call")
        try:
            # Re-check: whoever held the lock before us has probably just cached a token.
            return self._cached_token() or self._fetch_token()
        finally:
            # LockError: it expired during a very slow OAuth call; nothing left to release.
            with contextlib.suppress(LockError, RedisError):
                lock.release()

    def _cached_token(self) -> str | None:
        try:
            value = self._redis.get(self._token_key)
        except RedisError as error:
            raise DarajaUnavailable("token cache unavailable") from error
        if isinstance(value, bytes):
            value = value.decode()
        return value or None

    def _fetch_token(self) -> str:
        payload = self._send(
            "GET",
            OAUTH_PATH,
            oauth=True,
            params={"grant_type": "client_credentials"},
            auth=(self.credentials.consumer_key, self.credentials.consumer_secret),
        )
        token = payload.get("access_token")
        if not isinstance(token, str) or not token:
            raise DarajaUnavailable("OAuth answer without an access_token", http_status=200)
        expires_in = _expires_in(payload.get("expires_in"))
        ttl = max(expires_in - TOKEN_MARGIN_SECONDS, expires_in // 2)
        if ttl > 0:
            try:
                self._redis.set(self._token_key, token, ex=ttl)
            except RedisError as error:
                raise DarajaUnavailable("token cache unavailable") from error
        logger.info(
            "daraja access token fetched",
            extra={"base_url": self._base_url, "expires_in": expires_in, "cached_for": ttl},
        )
        return token

    def _forget_token(self, token: str) -> None:
        # Only if it is still the refused one: another worker may already have cached a
        # fresh token, and deleting that would cost a second OAuth call.
        try:
            self._forget_script(keys=[self._token_key], args=[token])
        except RedisError as error:
            raise DarajaUnavailable("token cache unavailable") from error

    # --- STK push ---------------------------------------------------------------------

    def stk_push(
        self,
        *,
        phone: str,
        amount: int,
        account_reference: str,
        description: str,
        callback_url: str,
    ) -> StkPushAccepted:
        """Ask Daraja to prompt `phone` (2547XXXXXXXX / 2541XXXXXXXX) to pay `amount` whole
        shillings. Not retried (a second push would prompt the customer twice), except once
        with a fresh token when Daraja refuses the token.

        Raises ValueError for arguments Daraja would refuse (account_reference over 12 or
        description over 13 characters: trimming them is the caller's choice, not ours),
        DarajaRejected or DarajaUnavailable.
        """
        _check_push_arguments(phone, amount, account_reference, description, callback_url)
        creds = self.credentials
        timestamp = self._timestamp()
        body = {
            "BusinessShortCode": creds.shortcode,
            "Password": self._password(timestamp),
            "Timestamp": timestamp,
            "TransactionType": (
                "CustomerBuyGoodsOnline" if creds.kind == "till" else "CustomerPayBillOnline"
            ),
            "Amount": amount,
            "PartyA": phone,
            "PartyB": creds.till_number if creds.kind == "till" else creds.shortcode,
            "PhoneNumber": phone,
            "CallBackURL": callback_url,
            "AccountReference": account_reference,
            "TransactionDesc": description,
        }
        try:
            payload = self._call_api(STK_PUSH_PATH, body)
            accepted = _accepted(payload)
        except DarajaError as error:
            self._log_failure("stk push", error, phone=phone)
            raise
        logger.info(
            "daraja stk push accepted",
            extra={
                "phone": mask_phone(phone),
                "amount": amount,
                "checkout_request_id": accepted.checkout_request_id,
                "base_url": self._base_url,
            },
        )
        return accepted

    def stk_query(self, checkout_request_id: str) -> StkQueryResult:
        """Ask Daraja for the outcome of a push. Pending (Daraja's HTTP 500
        "500.001.1001 The transaction is being processed") is `pending=True`, not an error.
        Raises ValueError for an empty id, DarajaRejected or DarajaUnavailable."""
        if not isinstance(checkout_request_id, str) or not checkout_request_id.strip():
            raise ValueError("checkout_request_id is required")
        timestamp = self._timestamp()
        body = {
            "BusinessShortCode": self.credentials.shortcode,
            "Password": self._password(timestamp),
            "Timestamp": timestamp,
            "CheckoutRequestID": checkout_request_id,
        }
        try:
            payload = self._call_api(STK_QUERY_PATH, body)
        except DarajaRejected as error:
            if _is_pending(error):
                return StkQueryResult(True, None, None, _envelope(error))
            self._log_failure("stk query", error, checkout_request_id=checkout_request_id)
            raise
        except DarajaError as error:
            self._log_failure("stk query", error, checkout_request_id=checkout_request_id)
            raise
        result_code = result_code_text(payload.get("ResultCode"))
        if result_code is None:
            # Not Daraja's shape: no outcome is known, so none is applied (it stays pending).
            error = DarajaUnavailable(
                "STK query answer without a valid ResultCode", http_status=200
            )
            self._log_failure("stk query", error, checkout_request_id=checkout_request_id)
            raise error
        description = payload.get("ResultDesc")
        return StkQueryResult(
            pending=False,
            result_code=result_code,
            result_description=description if isinstance(description, str) else None,
            raw=payload,
        )

    # --- transport --------------------------------------------------------------------

    def _call_api(self, path: str, body: dict) -> dict:
        """POST `body` with a bearer token. A refused token is dropped and replaced once and
        the call repeated once; a second refusal is final (no loop)."""
        token = self.access_token()
        try:
            return self._send("POST", path, token=token, json=body)
        except _TokenRejected:
            logger.info("daraja refused the access token; refreshing once")
            self._forget_token(token)
        token = self.access_token()
        try:
            return self._send("POST", path, token=token, json=body)
        except _TokenRejected as error:
            raise DarajaRejected(
                error.error_message,
                error_code=error.error_code,
                http_status=error.http_status,
                request_id=error.request_id,
            ) from None

    def _send(
        self, method: str, path: str, *, token: str | None = None, oauth: bool = False, **kwargs
    ) -> dict:
        """One HTTP exchange through the circuit breaker; the JSON object Daraja answered.
        Failures that mean "Daraja is down" count against the circuit; answers (even
        refusals) count as Daraja being up."""
        try:
            ticket = self._breaker.before_call()
        except CircuitOpen as error:
            logger.warning(
                "daraja circuit open; call not attempted",
                extra={"base_url": self._base_url, "retry_after": round(error.retry_after, 1)},
            )
            raise DarajaUnavailable("circuit open") from None
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            payload = self._exchange(method, path, headers=headers, oauth=oauth, **kwargs)
        except DarajaUnavailable as error:
            if error.error_code == _QUOTA_CODE:
                self._breaker.record_success(ticket)
            else:
                self._breaker.record_failure(ticket)
            raise self._scrubbed(error, token) from None
        except DarajaError as error:
            self._breaker.record_success(ticket)
            raise self._scrubbed(error, token) from None
        self._breaker.record_success(ticket)
        return payload

    def _exchange(self, method: str, path: str, *, oauth: bool, **kwargs) -> dict:
        try:
            response = self._session.request(
                method, self._base_url + path, timeout=self._timeout, **kwargs
            )
        except requests.ConnectTimeout:
            raise DarajaUnavailable("timed out connecting to Daraja") from None
        except requests.Timeout:
            raise DarajaUnavailable("Daraja did not answer in time", maybe_processed=True) from None
        except requests.ConnectionError as error:
            raise DarajaUnavailable(
                "could not connect to Daraja" if _never_connected(error) else "connection lost",
                maybe_processed=not _never_connected(error),
            ) from None
        except requests.RequestException as error:
            raise DarajaUnavailable(f"request failed: {type(error).__name__}") from None
        return _read(response, oauth=oauth)

    def _scrubbed(self, error: DarajaError, token: str | None) -> DarajaError:
        # Daraja echoes the token in some messages ("Invalid Access Token - <token>").
        secrets = [token, self.credentials.consumer_secret, self.credentials.passkey]
        message = error.error_message
        for secret in secrets:
            if secret and secret in message:
                message = message.replace(secret, "[redacted]")
        if message == error.error_message:
            return error
        return type(error)(
            message,
            error_code=error.error_code,
            http_status=error.http_status,
            request_id=error.request_id,
            maybe_processed=error.maybe_processed,
        )

    def _log_failure(
        self, operation: str, error: DarajaError, *, phone: str | None = None, **extra: Any
    ) -> None:
        level = logging.WARNING if isinstance(error, DarajaUnavailable) else logging.INFO
        text = str(error)
        if phone:
            text = text.replace(phone, mask_phone(phone))  # in case Daraja echoes it
            extra["phone"] = mask_phone(phone)
        logger.log(
            level,
            f"daraja {operation} failed: {text}",
            extra={
                "base_url": self._base_url,
                "error_class": type(error).__name__,
                "error_code": error.error_code,
                "http_status": error.http_status,
                "daraja_request_id": error.request_id,
                **extra,
            },
        )

    # --- request parts ----------------------------------------------------------------

    def _timestamp(self) -> str:
        return datetime.fromtimestamp(self._clock(), EAT).strftime("%Y%m%d%H%M%S")

    def _password(self, timestamp: str) -> str:
        raw = f"{self.credentials.shortcode}{self.credentials.passkey}{timestamp}"
        return base64.b64encode(raw.encode()).decode()


def daraja_breaker(
    redis: Redis,
    base_url: str,
    *,
    failure_threshold: int = 5,
    cool_off: float = 30.0,
    clock: Callable[[], float] = time.time,
    key_prefix: str = "lango:daraja",
    timeout: tuple[float, float] = (3.05, 15.0),
) -> RedisCircuitBreaker:
    """The circuit shared by every client (every tenant) that calls `base_url`."""
    return RedisCircuitBreaker(
        redis,
        _digest(base_url.rstrip("/")),
        failure_threshold=failure_threshold,
        cool_off=cool_off,
        # A trial is one HTTP call; past this its process is presumed dead.
        trial_timeout=sum(timeout) + 5.0,
        clock=clock,
        key_prefix=f"{key_prefix}:circuit",
    )


# --- reading answers -------------------------------------------------------------------


def _read(response: requests.Response, *, oauth: bool) -> dict:
    """Daraja's JSON object, or the DarajaError its answer means."""
    status = response.status_code
    try:
        payload = response.json()
    except ValueError:
        payload = None
    if not isinstance(payload, dict):
        payload = None
    code = str(payload["errorCode"]) if payload and payload.get("errorCode") else None
    message = str((payload or {}).get("errorMessage") or "")
    request_id = (payload or {}).get("requestId")

    if oauth and status in {400, 401, 403}:
        # Wrong consumer key/secret comes back as 400 with an empty body (or 400.008.0x).
        raise DarajaRejected(
            message or "OAuth refused the consumer key/secret",
            error_code=code,
            http_status=status,
            request_id=request_id,
        )
    if not oauth and (status == 401 or code in _TOKEN_ERROR_CODES):
        raise _TokenRejected(
            message or _fault_string(payload) or "access token refused",
            error_code=code,
            http_status=status,
            request_id=request_id,
        )
    if payload is None:
        ambiguous = 200 <= status < 300 or status in {502, 504}
        raise DarajaUnavailable(
            f"HTTP {status} without a JSON object", http_status=status, maybe_processed=ambiguous
        )
    if "fault" in payload:
        # Apigee, in front of Daraja, answering for it (unknown path, proxy failure).
        detail = payload["fault"].get("detail") if isinstance(payload["fault"], dict) else None
        raise DarajaUnavailable(
            _fault_string(payload) or "gateway fault",
            error_code=(detail or {}).get("errorcode") if isinstance(detail, dict) else None,
            http_status=status,
        )
    if code:
        # 500.001.x are business refusals Daraja sends as HTTP 500 (wrong credentials,
        # unknown merchant, subscriber locked); 500.003.x and other 5xx are Daraja failing.
        unavailable = (
            code.startswith("500.003.")
            or status == 429
            or (status >= 500 and not code.startswith("500.001."))
        )
        error_class = DarajaUnavailable if unavailable else DarajaRejected
        raise error_class(
            message or "Daraja error", error_code=code, http_status=status, request_id=request_id
        )
    if status >= 500 or status == 429:
        raise DarajaUnavailable(f"HTTP {status}", http_status=status)
    if status >= 300:
        raise DarajaRejected(f"HTTP {status}", http_status=status)
    return payload


def _accepted(payload: dict) -> StkPushAccepted:
    checkout = payload.get("CheckoutRequestID")
    if not checkout or not payload.get("MerchantRequestID"):
        # A 200 we cannot read: Daraja may well have sent the prompt.
        raise DarajaUnavailable(
            "STK push answer without request ids", http_status=200, maybe_processed=True
        )
    response_code = str(payload.get("ResponseCode", ""))
    if response_code != "0":
        raise DarajaRejected(
            str(payload.get("ResponseDescription") or "STK push not accepted"),
            error_code=response_code or None,
            http_status=200,
        )
    return StkPushAccepted(
        merchant_request_id=str(payload["MerchantRequestID"]),
        checkout_request_id=str(checkout),
        response_code=response_code,
        response_description=str(payload.get("ResponseDescription") or ""),
        customer_message=str(payload.get("CustomerMessage") or ""),
    )


def result_code_text(value: Any) -> str | None:
    """Daraja's ResultCode as text — a JSON number (callbacks), a string of digits (STK
    query) or a non-numeric code string ("SFC_IC0003") — or None when `value` is none of them
    (a boolean, an object, a fraction, a code too long to be one)."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if isinstance(value, str) and _RESULT_CODE.fullmatch(value):
        return value
    return None


def _is_pending(error: DarajaError) -> bool:
    return (
        error.error_code == _PENDING_CODE
        and _PENDING_MESSAGE in (error.error_message or "").lower()
    )


def _envelope(error: DarajaError) -> dict:
    return {
        "requestId": error.request_id,
        "errorCode": error.error_code,
        "errorMessage": error.error_message,
    }


def _fault_string(payload: dict | None) -> str | None:
    fault = (payload or {}).get("fault")
    return str(fault.get("faultstring")) if isinstance(fault, dict) else None


def _expires_in(value: Any) -> int:
    """Daraja sends "3599" (string) in practice and 3599 (number) in its docs."""
    try:
        if isinstance(value, bool):
            raise TypeError
        seconds = int(float(value))
    except (TypeError, ValueError, OverflowError):
        logger.warning("unreadable expires_in from Daraja; caching the token briefly")
        return _DEFAULT_EXPIRES_IN
    return max(seconds, 0)


def _never_connected(error: requests.ConnectionError) -> bool:
    """True when the failure was before any byte was sent (refused, DNS)."""
    reason = getattr(error.args[0], "reason", None) if error.args else None
    return isinstance(reason, NewConnectionError)


def _check_push_arguments(
    phone: str, amount: int, account_reference: str, description: str, callback_url: str
) -> None:
    if not isinstance(phone, str) or not _MSISDN.fullmatch(phone):
        raise ValueError("phone must be 12 digits: 2547XXXXXXXX or 2541XXXXXXXX")
    if isinstance(amount, bool) or not isinstance(amount, int) or amount < 1:
        raise ValueError("amount must be a whole number of shillings, at least 1")
    if not isinstance(account_reference, str) or not account_reference:
        raise ValueError("account_reference is required")
    if len(account_reference) > _MAX_ACCOUNT_REFERENCE:
        raise ValueError(f"account_reference is over {_MAX_ACCOUNT_REFERENCE} characters")
    if not isinstance(description, str) or not description:
        raise ValueError("description is required")
    if len(description) > _MAX_DESCRIPTION:
        raise ValueError(f"description is over {_MAX_DESCRIPTION} characters")
    parts = urlsplit(callback_url) if isinstance(callback_url, str) else None
    if not parts or parts.scheme not in {"http", "https"} or not parts.netloc:
        raise ValueError("callback_url must be an http(s) URL")
    if any(character.isspace() for character in callback_url):
        raise ValueError("callback_url must not contain whitespace")


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32]
