"""STK push: initiate, apply outcomes (from callbacks or STK query), reconcile, expire.

Every function here runs inside the tenant's scope and only flushes: the request, job or
command around it commits (core.unit_of_work). The commits in the middle are named
checkpoints: the pending push before Daraja is called, a push Daraja refused before its
request fails, and a callback's raw body before it is parsed.

A push moves pending → succeeded | failed | cancelled | expired once; the move and its
`payment.*` event are in one transaction (row locked), so duplicate or racing callbacks and
queries change nothing twice.
The one later move: `expired` is Lango's own conclusion, not M-Pesa's, so a push Lango expired
that M-Pesa then reports paid becomes succeeded (money M-Pesa reports is never discarded). A
success reported after M-Pesa itself said failed or cancelled is held and flagged instead.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import math
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from flask import current_app
from marshmallow import ValidationError
from sqlalchemy import event as orm_event
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from billing.quota import count_again as count_usage_again
from billing.quota import release as release_quota
from billing.quota import reserve as reserve_quota
from compliance.audit import Actor, AuditAction, record
from compliance.fraud import Decision, Outcome, ScreenedPush, open_review_case, refuse, screen
from core.api import field_with_nul
from core.errors import LangoError, NotFound, PermissionDenied
from core.extensions import db
from core.idempotency import Claim
from core.ids import new_id
from core.phone import mask_phone
from core.tenancy import require_tenant
from core.unit_of_work import Checkpoint, checkpoint
from payments.credentials import live_credentials
from payments.daraja import DarajaClient, DarajaCredentials, DarajaError, DarajaRejected
from payments.events import record_push_finished, record_push_flagged
from payments.models import CallbackOutcome, MpesaCallback, PushStatus, StkPush
from payments.schemas import DarajaCallbackSchema
from tenants.service import Caller, get_tenant

logger = logging.getLogger("lango.payments")
EAT = ZoneInfo("Africa/Nairobi")

# Daraja ResultCodes that are not a plain failure.
_CANCELLED_CODES = {"1031", "1032"}
_EXPIRED_CODES = {"1019"}
# The result code of a push Lango expired without an answer from M-Pesa (M-Pesa's own
# codes are numbers or upper-case codes, never this).
EXPIRED_BY_LANGO = "expired"
# What a success callback's metadata items must look like when present (daraja.md §3.1).
_AMOUNT_TEXT = re.compile(r"^\d{1,9}(\.\d{1,2})?$")
_MSISDN_TEXT = re.compile(r"^\d{9,15}$")
_RECEIPT = re.compile(r"^[A-Z0-9]{1,20}$")
# Pushes whose status changed in the session's open transaction: published once it commits.
_CHANGED_PUSHES = "lango.payments.changed_pushes"


class LivemodeNotEnabled(PermissionDenied):
    code = "livemode_not_enabled"
    message = (
        "Live mode is not enabled for this account: it needs M-Pesa credentials "
        "(PUT /v1/mpesa-credentials) and approval."
    )


class CallbackSourceRefused(PermissionDenied):
    code = "callback_source_refused"
    message = "Callbacks for live pushes are accepted only from MPESA_CALLBACK_ALLOWED_IPS."


class DarajaUnavailable(LangoError):
    """Daraja refused the push (502) or could not be reached (503); nothing was charged."""

    status = 503
    type = "upstream_error"
    code = "daraja_unavailable"
    message = "M-Pesa is unavailable right now; nothing was charged. Retry later."


@dataclass(frozen=True)
class PushRequest:
    phone_number: str
    amount: int
    account_reference: str
    description: str
    metadata: dict


def initiate_push(
    caller: Caller,
    request: PushRequest,
    *,
    actor: Actor | None = None,
    claim: Claim | None = None,
) -> StkPush:
    """Create the push (pending) and ask Daraja to prompt the customer.

    The pending row is committed before Daraja is called (a checkpoint), so a crash at any
    point leaves a push that the callback or reconciliation can still finish; Daraja's ids
    for it are committed by the caller's unit of work. Fraud screening runs first:
    FraudBlocked (403) leaves no push and no quota used; a `review` outcome opens a review
    case in the push's own transaction. Raises LivemodeNotEnabled, or
    DarajaUnavailable (after marking the push failed) when Daraja refused it or was surely
    not reached; when Daraja may have acted on it, the push stays pending. `actor` is who
    the audit trail names (default: the request's API key; the dashboard names its member).
    `claim` (the request's Idempotency-Key) is linked to the push in the push's transaction;
    a claim that already names a push (its first attempt died) gets that push back, with no
    second push and no second call to Daraja.
    """
    require_tenant()
    if claim is not None and claim.object_id is not None:
        return get_push(claim.object_id, livemode=caller.livemode)
    credentials = daraja_credentials(caller.tenant_id, caller.livemode, caller.live_enabled)
    # Screened before the push row and its quota reservation exist: a blocked push leaves
    # nothing behind to release, is never billed and never reaches Daraja.
    decision = screen(
        caller.tenant_id, ScreenedPush(request.phone_number, request.amount, caller.livemode)
    )
    if decision.outcome is Outcome.BLOCK:
        raise refuse(decision)
    token = callback_token(caller.tenant_id)
    push = _create_pending_push(caller, request, token, decision, actor=actor, claim=claim)
    # The push, its quota reservation, its audit entry and the claim's link are durable before
    # Daraja can take money for them: a crash from here on leaves a pending push that the
    # callback or reconciliation finishes, and a retry with the key gets this push back.
    checkpoint(Checkpoint.PENDING_PUSH)
    logger.info(
        "stk push created",
        extra={"stk_push_id": push.id, "phone": mask_phone(push.phone_number)},
    )
    try:
        accepted = daraja_client(credentials).stk_push(
            phone=push.phone_number,
            amount=push.amount,
            account_reference=push.account_reference,
            description=push.description,
            callback_url=callback_url(token),
        )
    except DarajaError as error:
        if error.maybe_processed:
            # Daraja may have acted on it (e.g. a read timeout): the customer may yet pay.
            # Leave it pending; the callback or the expiry deadline settles it.
            logger.warning("stk push outcome unknown", extra={"stk_push_id": push.id})
            return push
        _fail_at_initiation(push, error)
        # The failed push and its released reservation are kept although the caller answers
        # with an error (which rolls its unit of work back).
        checkpoint(Checkpoint.REFUSED_PUSH)
        unavailable = DarajaUnavailable(
            _refusal_message(error), stk_push_id=push.id, daraja_error_code=error.error_code
        )
        if isinstance(error, DarajaRejected):
            unavailable.status = 502  # Daraja answered and refused; 503 when unreachable
        raise unavailable from None
    push.merchant_request_id = accepted.merchant_request_id
    push.checkout_request_id = accepted.checkout_request_id
    return push


def _create_pending_push(
    caller: Caller,
    request: PushRequest,
    token: str,
    decision: Decision,
    *,
    actor: Actor | None,
    claim: Claim | None,
) -> StkPush:
    """The pending push with its quota reservation, audit entry, review case (a `review`
    outcome) and claim link, flushed. In a savepoint: QuotaExceeded, PlanExcludesLivemode or
    IdempotencyKeyInUse leaves nothing of it behind, even for a caller that catches them."""
    now = datetime.now(UTC)
    push = StkPush(
        id=new_id("stk"),
        livemode=caller.livemode,
        status=PushStatus.PENDING,
        phone_number=request.phone_number,
        amount=request.amount,
        account_reference=request.account_reference,
        description=request.description,
        metadata_=request.metadata,
        callback_token_hash=hash_token(token),
        created_at=now,
        updated_at=now,
    )
    with db.session.begin_nested():
        db.session.add(push)
        db.session.flush()
        # Counted in the same transaction as the push row: both exist, or neither.
        reserve_quota(caller.tenant_id, caller.livemode, push.id)
        record(
            AuditAction.STK_PUSH_INITIATED,
            target_type="stk_push",
            target_id=push.id,
            tenant_id=caller.tenant_id,
            actor=actor,
            diff={
                "after": {
                    "amount": push.amount,
                    "phone_number": mask_phone(push.phone_number),
                    "livemode": push.livemode,
                }
            },
        )
        if decision.outcome is Outcome.REVIEW:
            open_review_case(caller.tenant_id, push.id, decision.rule_id)  # the push goes ahead
        if claim is not None:
            claim.link(push.id)
    return push


def _refusal_message(error: DarajaError) -> str:
    if isinstance(error, DarajaRejected):
        return f"M-Pesa refused the push: {error.error_message}. Nothing was charged."
    return "M-Pesa could not be reached; nothing was charged. Retry later."


def _fail_at_initiation(push: StkPush, error: DarajaError) -> None:
    push = _lock_push(push.id)
    if push.status is PushStatus.PENDING:
        release_quota(require_tenant().tenant_id, push.id)  # never left Lango: not billed
        _finish(
            push,
            PushStatus.FAILED,
            result_code=error.error_code or "daraja_unavailable",
            result_description=(error.error_message or "Daraja unavailable")[:255],
        )


def _lock_push(push_id: str) -> StkPush:
    """The push, row-locked and read afresh from the database (not the session's copy)."""
    return db.session.scalars(
        select(StkPush)
        .where(StkPush.id == push_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one()


def get_push(push_id: str, *, livemode: bool) -> StkPush:
    push = db.session.get(StkPush, push_id)
    if push is None or push.livemode != livemode:
        raise NotFound("No such STK push.", param="id")
    return push


def list_pushes_statement(
    *, livemode: bool, status=None, phone_number=None, created_gte=None, created_lte=None
):
    statement = select(StkPush).where(StkPush.livemode == livemode)
    if status:
        statement = statement.where(StkPush.status == PushStatus(status))
    if phone_number:
        statement = statement.where(StkPush.phone_number == phone_number)
    if created_gte:
        statement = statement.where(StkPush.created_at >= created_gte)
    if created_lte:
        statement = statement.where(StkPush.created_at <= created_lte)
    return statement


# --- outcomes --------------------------------------------------------------------------


def status_for_result(result_code: str) -> PushStatus:
    if result_code == "0":
        return PushStatus.SUCCEEDED
    if result_code in _CANCELLED_CODES:
        return PushStatus.CANCELLED
    if result_code in _EXPIRED_CODES:
        return PushStatus.EXPIRED
    return PushStatus.FAILED


@dataclass(frozen=True)
class CallbackResult:
    outcome: CallbackOutcome
    push: StkPush | None


def record_callback(token: str, raw_body: bytes, source_ip: str | None) -> CallbackResult:
    """Store a Daraja callback, then apply it to its push (in the current tenant scope).

    The raw body is committed before any parsing (a checkpoint), so nothing Daraja sent is
    ever lost; applying it is committed by the caller's unit of work.
    Duplicates and callbacks for a finished push change nothing, except a success for a push
    Lango expired (it succeeds late). A body that is not Daraja's shape is kept as
    unparseable; a success whose amount or phone disagrees with the push (or lacks one) is
    kept and flagged, not applied: reconciliation then asks Daraja directly. A callback for
    a live push from outside MPESA_CALLBACK_ALLOWED_IPS is kept as refused, not applied, and
    raises CallbackSourceRefused (test-mode callbacks come from Lango's own sandbox, so the
    list does not apply to them). Raises NotFound for a token bound to no push.
    """
    push = db.session.scalar(
        select(StkPush).where(StkPush.callback_token_hash == hash_token(token))
    )
    if push is None:
        raise NotFound("No such callback.")
    refused = push.livemode and not _allowed_callback_source(source_ip)
    callback = MpesaCallback(
        id=new_id("cb"),
        stk_push_id=push.id,
        source_ip=source_ip,
        # PostgreSQL text holds no NUL: kept as U+FFFD, as undecodable bytes are.
        body=raw_body.decode("utf-8", errors="replace").replace("\x00", "\ufffd"),
        outcome=(CallbackOutcome.REFUSED if refused else CallbackOutcome.RECEIVED).value,
        detail="source address not in MPESA_CALLBACK_ALLOWED_IPS" if refused else None,
    )
    db.session.add(callback)
    # What Daraja sent is kept even if parsing or applying it fails, or the source is refused.
    checkpoint(Checkpoint.RAW_CALLBACK)
    if refused:
        logger.warning(
            "callback from outside the allowed addresses",
            extra={"stk_push_id": push.id, "ip": source_ip},
        )
        raise CallbackSourceRefused()

    parsed = _parse_callback(raw_body)
    push = _lock_push(push.id)
    outcome, detail = _apply_callback(push, parsed)
    callback.outcome, callback.detail = outcome.value, detail
    if outcome is CallbackOutcome.APPLIED:
        publish_status_after_commit(push)
    return CallbackResult(outcome, push)


def _allowed_callback_source(source_ip: str | None) -> bool:
    allowed = current_app.extensions["lango.settings"].MPESA_CALLBACK_ALLOWED_IPS
    if not allowed:
        return True
    try:
        address = ipaddress.ip_address(source_ip or "")
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(network, strict=False) for network in allowed)


def tenant_exists(tenant_id: str) -> bool:
    """Any status: a suspended tenant's customers may still have paid."""
    try:
        get_tenant(tenant_id)
    except NotFound:
        return False
    return True


@dataclass(frozen=True)
class ParsedCallback:
    checkout_request_id: str | None
    result_code: str
    result_description: str
    amount: float | None
    receipt: str | None
    phone: str | None
    transaction_date: datetime | None


def _parse_callback(raw_body: bytes) -> ParsedCallback | None:
    """The callback if it has Daraja's shape (payments.schemas.DarajaCallbackSchema, with
    well-typed metadata values); None when it is not JSON, is nested beyond the decoder's
    depth, has another shape, or holds NUL (Daraja never sends one; PostgreSQL cannot store
    it). A success's missing Amount, receipt or phone is left None, for the checks to flag."""
    try:
        document = json.loads(raw_body)
        if field_with_nul(document) is not None:
            return None
        body = DarajaCallbackSchema().load(document)["Body"]["stkCallback"]
        items = {
            item["Name"]: item.get("Value")
            for item in body.get("CallbackMetadata", {}).get("Item", [])
        }
        return ParsedCallback(
            checkout_request_id=body["CheckoutRequestID"],
            result_code=body["ResultCode"],
            result_description=body["ResultDesc"][:255],
            amount=_item_amount(items.get("Amount")),
            receipt=_item_text(items.get("MpesaReceiptNumber"), _RECEIPT),
            phone=_item_text(items.get("PhoneNumber"), _MSISDN_TEXT),
            transaction_date=_parse_daraja_time(items.get("TransactionDate")),
        )
    except (ValueError, ValidationError, RecursionError):
        return None


def _item_amount(value) -> float | None:
    """Amount is a number (`1.00` or `1`); raises ValueError for anything else."""
    if value is None:
        return None
    if isinstance(value, str) and _AMOUNT_TEXT.fullmatch(value):
        return float(value)
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    raise ValueError("not a Daraja amount")


def _item_text(value, pattern: re.Pattern) -> str | None:
    """A receipt (string) or phone (number or digits) matching `pattern`; else ValueError."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if isinstance(value, str) and pattern.fullmatch(value):
        return value
    raise ValueError("not a Daraja metadata value")


def _parse_daraja_time(value) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.strptime(str(value), "%Y%m%d%H%M%S").replace(tzinfo=EAT)
    except ValueError:
        return None


def _apply_callback(
    push: StkPush, parsed: ParsedCallback | None
) -> tuple[CallbackOutcome, str | None]:
    if parsed is None:
        return CallbackOutcome.UNPARSEABLE, "not a Daraja STK callback"
    status = status_for_result(parsed.result_code)
    # Only a report that can change the push is checked: a duplicate is just recorded.
    news = not push.status.is_final or (status is PushStatus.SUCCEEDED and not _paid(push))
    disagreement = _disagreement(push, parsed, status) if news else None
    if disagreement:
        return _flag(push, disagreement)
    return _settle(
        push,
        status,
        result_code=parsed.result_code,
        result_description=parsed.result_description,
        receipt=parsed.receipt,
        transaction_date=parsed.transaction_date,
    )


def _disagreement(push: StkPush, parsed: ParsedCallback, status: PushStatus) -> str | None:
    """Why the callback cannot be applied to this push as it is, or None."""
    if push.checkout_request_id and parsed.checkout_request_id != push.checkout_request_id:
        return "callback CheckoutRequestID does not match the push"
    if status is not PushStatus.SUCCEEDED:
        return None
    if parsed.amount is None or parsed.amount != push.amount:
        return f"callback amount {parsed.amount} differs from {push.amount}"
    if parsed.phone is None:
        return "callback has no PhoneNumber to check against the push"
    if parsed.phone != push.phone_number:
        return "callback phone number differs from the push"
    if parsed.receipt is None:
        return "callback reports a payment without an MpesaReceiptNumber"
    return None


def _paid(push: StkPush) -> bool:
    return push.status is PushStatus.SUCCEEDED


def _expired_by_lango(push: StkPush) -> bool:
    return push.status is PushStatus.EXPIRED and push.expired_at is not None


def _settle(
    push: StkPush,
    status: PushStatus,
    *,
    result_code: str,
    result_description: str,
    receipt: str | None = None,
    transaction_date: datetime | None = None,
) -> tuple[CallbackOutcome, str | None]:
    """Apply an outcome M-Pesa reported (a checked callback, or an STK query answer) to the
    locked push. A pending push becomes final. A push Lango expired that M-Pesa reports paid
    succeeds late; any report for it proves it reached Daraja, so it is billed again if its
    reservation was released. A success for a push M-Pesa itself failed or cancelled is held
    and flagged, never applied. Anything else for a final push changes nothing. The caller
    commits."""
    outcome = {
        "result_code": result_code,
        "result_description": result_description,
        "receipt": receipt,
        "transaction_date": transaction_date,
    }
    if not push.status.is_final:
        _finish(push, status, **outcome)
        return CallbackOutcome.APPLIED, None
    if _expired_by_lango(push):
        # M-Pesa knew of it after all: it reached Daraja, so it is billed (again, if its
        # reservation was released when it expired unacknowledged).
        count_usage_again(require_tenant().tenant_id, push.livemode, push.id)
        if status is PushStatus.SUCCEEDED:
            _finish(push, status, **outcome)
            logger.warning("stk push succeeded after it expired", extra={"stk_push_id": push.id})
            return CallbackOutcome.APPLIED, "succeeded after Lango had expired the push"
        if push.result_code == EXPIRED_BY_LANGO:
            # M-Pesa's own final answer: the push stays expired, now saying why, and
            # reconciliation stops asking about it.
            push.result_code = result_code
            push.result_description = result_description
            push.updated_at = datetime.now(UTC)
            return CallbackOutcome.APPLIED, "M-Pesa's answer recorded on the expired push"
    if status is not PushStatus.SUCCEEDED or _paid(push):
        return CallbackOutcome.DUPLICATE, f"push already {push.status.value}"
    return _flag(
        push,
        f"M-Pesa reported this push paid (receipt {receipt or 'unknown'}) after reporting it "
        f"{push.status.value} (ResultCode {push.result_code}); the payment is held, not applied",
    )


def _flag(push: StkPush, reason: str) -> tuple[CallbackOutcome, str]:
    """Hold a report from M-Pesa: the push says why, and a `payment.flagged` event tells the
    tenant (once per distinct reason, so duplicate callbacks do not repeat it)."""
    reason = reason[:255]
    if push.flagged_reason != reason:
        push.flagged_reason = reason
        push.updated_at = datetime.now(UTC)
        record_push_flagged(push)
    logger.warning("stk callback flagged", extra={"stk_push_id": push.id, "reason": reason})
    return CallbackOutcome.MISMATCH, reason


def _finish(
    push: StkPush,
    status: PushStatus,
    *,
    result_code: str,
    result_description: str,
    receipt: str | None = None,
    transaction_date: datetime | None = None,
) -> None:
    """The one place a push becomes final; the caller holds the row lock and commits."""
    now = datetime.now(UTC)
    push.status = status
    push.result_code = result_code
    push.result_description = result_description
    push.mpesa_receipt_number = receipt
    push.transaction_date = transaction_date
    push.updated_at = now
    push.resolved_at = now
    # Other domains react to the event later, each in its own transaction (the outbox).
    record_push_finished(push)


# --- reconciliation --------------------------------------------------------------------


@dataclass
class ReconcileReport:
    queried: int = 0
    resolved: int = 0
    expired: int = 0
    errors: int = 0


def pushes_to_reconcile(now: datetime) -> list[str]:
    """The ids of the current tenant's pushes reconciliation visits at `now`, oldest first
    (at most 200 of each kind): those still pending after RECONCILE_AFTER_SECONDS that were
    not asked about within RECONCILE_INTERVAL_SECONDS (or are past PUSH_EXPIRY_SECONDS), and
    those Lango expired after Daraja acknowledged them, asked about again every
    RECONCILE_EXPIRED_INTERVAL_SECONDS for RECONCILE_EXPIRED_FOR_SECONDS."""
    settings = current_app.extensions["lango.settings"]
    query_before = now - timedelta(seconds=settings.RECONCILE_AFTER_SECONDS)
    requery_before = now - timedelta(seconds=settings.RECONCILE_INTERVAL_SECONDS)
    pending = (
        select(StkPush.id)
        .where(
            StkPush.status == PushStatus.PENDING,
            StkPush.created_at < query_before,
            or_(
                StkPush.last_queried_at.is_(None),
                StkPush.last_queried_at < requery_before,
                StkPush.created_at < _expire_before(now),
            ),
        )
        .order_by(StkPush.created_at)
        .limit(200)
    )
    expired_unanswered = (
        select(StkPush.id)
        .where(
            StkPush.status == PushStatus.EXPIRED,
            StkPush.result_code == EXPIRED_BY_LANGO,
            StkPush.checkout_request_id.is_not(None),
            StkPush.expired_at > now - timedelta(seconds=settings.RECONCILE_EXPIRED_FOR_SECONDS),
            StkPush.last_queried_at
            < now - timedelta(seconds=settings.RECONCILE_EXPIRED_INTERVAL_SECONDS),
        )
        .order_by(StkPush.created_at)
        .limit(200)
    )
    return [*db.session.scalars(pending), *db.session.scalars(expired_unanswered)]


def _expire_before(now: datetime) -> datetime:
    return now - timedelta(seconds=current_app.extensions["lango.settings"].PUSH_EXPIRY_SECONDS)


def reconcile_push(push_id: str, now: datetime, report: ReconcileReport) -> None:
    """Ask Daraja about one push (STK query) and apply M-Pesa's final answer, or expire a
    push still pending with no answer PUSH_EXPIRY_SECONDS after it was created (as of `now`).
    A lost callback's payment is found by asking, never by pushing again. Daraja is asked
    before the row is locked; the answer is applied under the lock, and the caller commits.
    Counts what it did in `report`."""
    push = db.session.get(StkPush, push_id)
    result = None
    if push.checkout_request_id:
        try:
            credentials = daraja_credentials(require_tenant().tenant_id, push.livemode, True)
            result = daraja_client(credentials).stk_query(push.checkout_request_id)
            report.queried += 1
        except (DarajaError, LivemodeNotEnabled) as error:
            report.errors += 1
            logger.warning("stk query failed", extra={"stk_push_id": push_id, "error": str(error)})
    push = _lock_push(push_id)
    changed = False
    if result is not None and not result.pending:
        # Settled even if the push was made final meanwhile: Lango's own expiry must not
        # discard a success Daraja reports.
        outcome, _ = _settle(
            push,
            status_for_result(result.result_code),
            result_code=result.result_code,
            result_description=(result.result_description or "")[:255],
        )
        changed = outcome is CallbackOutcome.APPLIED
        report.resolved += changed
    elif push.status.is_final and not _expired_by_lango(push):
        return
    elif push.status is PushStatus.PENDING and push.created_at < _expire_before(now):
        _expire(push)
        changed = True
        report.expired += 1
    push.last_queried_at = datetime.now(UTC)
    if changed:
        publish_status_after_commit(push)


def _expire(push: StkPush) -> None:
    """Lango gives up on a pending push M-Pesa told it nothing about (row locked; the caller
    commits). One Daraja never acknowledged (no CheckoutRequestID: it died before or during
    the call) is not billed: its reservation is released, once, under the row lock."""
    if push.checkout_request_id is None:
        release_quota(require_tenant().tenant_id, push.id)
    push.expired_at = datetime.now(UTC)
    _finish(
        push,
        PushStatus.EXPIRED,
        result_code=EXPIRED_BY_LANGO,
        result_description="No outcome from M-Pesa in time; the push has expired.",
    )


# --- Daraja wiring ---------------------------------------------------------------------


def daraja_credentials(tenant_id: str, livemode: bool, live_enabled: bool) -> DarajaCredentials:
    """Test mode: Lango's Daraja sandbox. Live mode: the tenant's own credentials."""
    settings = current_app.extensions["lango.settings"]
    if not livemode:
        return DarajaCredentials(
            base_url=settings.SANDBOX_BASE_URL,
            consumer_key=settings.SANDBOX_CONSUMER_KEY,
            consumer_secret=settings.SANDBOX_CONSUMER_SECRET,
            shortcode=settings.SANDBOX_SHORTCODE,
            passkey=settings.SANDBOX_PASSKEY,
            kind="paybill",
            till_number=None,
        )
    credentials = live_credentials(tenant_id, settings.DARAJA_BASE_URL) if live_enabled else None
    if credentials is None:
        raise LivemodeNotEnabled()
    return credentials


def daraja_client(credentials: DarajaCredentials) -> DarajaClient:
    return DarajaClient(credentials, current_app.extensions["lango.redis"])


def callback_token(tenant_id: str) -> str:
    """`<tenant ulid>.<secret>`: names the tenant (to find its schema) and, by its secret
    part, one push. Only its hash is stored."""
    return f"{tenant_id.removeprefix('ten_')}.{secrets.token_urlsafe(32)}"


def tenant_id_from_token(token: str) -> str | None:
    tenant_part, dot, secret = token.partition(".")
    if not dot or len(tenant_part) != 26 or len(secret) < 32:
        return None
    # ASCII only: the id names a schema, and a tenant scope refuses any other character.
    if not (tenant_part.isascii() and tenant_part.isalnum()):
        return None
    return f"ten_{tenant_part.lower()}"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def callback_url(token: str) -> str:
    base = current_app.extensions["lango.settings"].PUBLIC_BASE_URL.rstrip("/")
    return f"{base}/callbacks/mpesa/stk/{token}"


def status_channel(push_id: str) -> str:
    return f"lango:stk-status:{push_id}"


def publish_status_after_commit(push: StkPush) -> None:
    """Tell live streams (SSE) that the push changed, once the current transaction commits:
    a stream woken before that would read the old status. Best effort; the database is the
    truth."""
    db.session.info.setdefault(_CHANGED_PUSHES, {})[push.id] = push.status.value


@orm_event.listens_for(Session, "after_commit")
def _publish_committed(session: Session) -> None:
    for push_id, status in session.info.pop(_CHANGED_PUSHES, {}).items():
        try:
            current_app.extensions["lango.redis"].publish(status_channel(push_id), status)
        except Exception:  # Redis down: streams fall back to polling
            logger.warning("could not publish status", extra={"stk_push_id": push_id})


@orm_event.listens_for(Session, "after_rollback")
def _forget_uncommitted(session: Session) -> None:
    session.info.pop(_CHANGED_PUSHES, None)
