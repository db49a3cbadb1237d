"""Idempotency-Key for POST endpoints (tenant schema), exact under concurrency.

The first request with a key claims it with an INSERT … ON CONFLICT DO NOTHING committed on
its own (a named checkpoint), so of any number of simultaneous requests exactly one
executes. It then stores its status and body in the request's own unit of work, so the
answer commits with the work it describes; an error answer is stored after the work is
rolled back. A retry with the same key and body gets that response again
(`Idempotent-Replayed: true`). Same key with another body → 409 idempotency_key_reused; same
key while the first is still running → 409 idempotency_key_in_use. Validation failures never
reach here (they are not stored, so a corrected retry works), and a request that crashes
releases its claim so it can be retried.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import wraps

from flask import Response, current_app, g, jsonify, request
from sqlalchemy import text

from core import crypto
from core.errors import Conflict, LangoError, ValidationFailed, handle_lango_error
from core.extensions import db
from core.unit_of_work import Checkpoint, checkpoint

logger = logging.getLogger("lango.idempotency")

MAX_KEY_LENGTH = 255
# Marks a stored answer kept encrypted (it shows a secret).
_ENCRYPTED = "lango_encrypted_response"
# Keys are kept at least this long (Stripe keeps 24 h); older ones are purged.
RETENTION = timedelta(hours=24)


@dataclass(frozen=True)
class Claim:
    """This request's hold on its Idempotency-Key. `object_id` is what an earlier, abandoned
    attempt with the key linked before it died (None: it made nothing, or this is the first)."""

    livemode: bool
    key: str
    lease_token: str
    object_id: str | None = None

    def link(self, object_id: str) -> None:
        """Record, in the caller's transaction, that this request made `object_id`: a retry
        that takes over the claim answers with it. Raises IdempotencyKeyInUse, so the
        caller's transaction rolls back, if the claim was taken over meanwhile (its lease
        ran out): the retry that took it runs instead, and one object is made, not two."""
        linked = db.session.execute(
            text(
                "UPDATE idempotency_keys SET object_id = :object_id "
                "WHERE livemode = :livemode AND key = :key AND lease_token = :token"
            ),
            {
                "object_id": object_id,
                "livemode": self.livemode,
                "key": self.key,
                "token": self.lease_token,
            },
        ).rowcount
        if not linked:
            raise IdempotencyKeyInUse(param="Idempotency-Key", headers={"Retry-After": "1"})


def current_claim() -> Claim | None:
    """The claim of the request being handled, if it sent an Idempotency-Key."""
    return g.get("idempotency_claim")


class IdempotencyKeyReused(Conflict):
    type = "idempotency_error"
    code = "idempotency_key_reused"
    message = "This Idempotency-Key was used with a different request body."


class IdempotencyKeyInUse(Conflict):
    type = "idempotency_error"
    code = "idempotency_key_in_use"
    message = "A request with this Idempotency-Key is still being processed; retry shortly."


def idempotent(view=None, *, secret_in_response: bool = False):
    """Make a POST view honour `Idempotency-Key`. Apply it below the arguments decorator
    (so validation runs first) and above the response decorator.

    `secret_in_response=True` (answers that show a secret once, like a signing secret)
    stores the answer encrypted (core.crypto), so no secret sits in plain text for the 24 h
    the key is kept."""
    if view is None:
        return lambda view: idempotent(view, secret_in_response=secret_in_response)

    @wraps(view)
    def wrapper(*args, **kwargs):
        key = request.headers.get("Idempotency-Key")
        if key is None:
            return view(*args, **kwargs)
        if not key.strip() or len(key) > MAX_KEY_LENGTH or not key.isprintable():
            raise ValidationFailed(
                f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} printable characters.",
                param="Idempotency-Key",
            )
        outcome = _claim(g.caller.livemode, key, _request_hash())
        if isinstance(outcome, Response):
            return outcome
        g.idempotency_claim = outcome
        try:
            response = view(*args, **kwargs)
        except LangoError as error:
            # The answer is the error, kept for retries; the work the view did is not kept
            # (the unit rolls back here, the request's own rollback then finds nothing).
            response = handle_lango_error(error)
            db.session.rollback()
            _complete(outcome, response, encrypt=secret_in_response)
            checkpoint(Checkpoint.IDEMPOTENCY_RESPONSE)
            return response
        except BaseException:
            _release(outcome)
            raise
        if not isinstance(response, Response):
            response = jsonify(response)
        # Stored in the request's unit of work: the answer commits with the work it describes.
        _complete(outcome, response, encrypt=secret_in_response)
        return response

    return wrapper


def _request_hash() -> str:
    body = request.get_json(silent=True)
    canonical = json.dumps(
        {"method": request.method, "path": request.path, "body": body},
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def _claim(livemode: bool, key: str, request_hash: str) -> Claim | Response:
    """Claim the key (a Claim: go ahead), or answer for an earlier request with it."""
    token = secrets.token_hex(16)
    claimed = db.session.execute(
        text(
            "INSERT INTO idempotency_keys (livemode, key, request_hash, lease_token, locked_at) "
            "VALUES (:livemode, :key, :hash, :token, now()) ON CONFLICT DO NOTHING RETURNING key"
        ),
        {"livemode": livemode, "key": key, "hash": request_hash, "token": token},
    ).scalar()
    if claimed is not None:
        checkpoint(Checkpoint.IDEMPOTENCY_CLAIM)
        return Claim(livemode, key, token)
    row = db.session.execute(
        text(
            "SELECT request_hash, response_status, response_body FROM idempotency_keys "
            "WHERE livemode = :livemode AND key = :key"
        ),
        {"livemode": livemode, "key": key},
    ).one()
    if row.request_hash != request_hash:
        raise IdempotencyKeyReused(param="Idempotency-Key")
    if row.response_status is None:
        return _take_over(livemode, key, token)
    body = row.response_body
    if isinstance(body, dict) and set(body) == {_ENCRYPTED}:
        body = json.loads(crypto.decrypt(body[_ENCRYPTED]))
    replay = jsonify(body)
    replay.status_code = row.response_status
    replay.headers["Idempotent-Replayed"] = "true"
    return replay


def _take_over(livemode: bool, key: str, token: str) -> Claim:
    """Take over a claim still without an answer whose lease has run out (its request
    died), or raise IdempotencyKeyInUse while the lease holds. The row lock the UPDATE takes
    lets exactly one of several simultaneous retries win."""
    lease = current_app.extensions["lango.settings"].IDEMPOTENCY_LEASE_SECONDS
    taken = db.session.execute(
        text(
            "UPDATE idempotency_keys SET lease_token = :token, locked_at = now() "
            "WHERE livemode = :livemode AND key = :key AND response_status IS NULL "
            "AND locked_at < now() - make_interval(secs => :lease) "
            "RETURNING object_id"
        ),
        {"token": token, "livemode": livemode, "key": key, "lease": lease},
    ).one_or_none()
    if taken is None:
        raise IdempotencyKeyInUse(param="Idempotency-Key", headers={"Retry-After": "1"})
    checkpoint(Checkpoint.IDEMPOTENCY_CLAIM)
    logger.warning(
        "idempotency claim taken over after its lease ran out",
        extra={"livemode": livemode, "object_id": taken.object_id},
    )
    return Claim(livemode, key, token, taken.object_id)


def _complete(claim: Claim, response: Response, *, encrypt: bool) -> None:
    """Store the answer, unless the claim was taken over meanwhile (this request outlived its
    lease): the answer stored is then the one of the retry that took it."""
    body = response.get_data(as_text=True)
    if encrypt:
        body = json.dumps({_ENCRYPTED: crypto.encrypt(body)})
    db.session.execute(
        text(
            "UPDATE idempotency_keys SET response_status = :status, "
            "response_body = CAST(:body AS jsonb), completed_at = now() "
            "WHERE livemode = :livemode AND key = :key AND lease_token = :token"
        ),
        {
            "status": response.status_code,
            "body": body,
            "livemode": claim.livemode,
            "key": claim.key,
            "token": claim.lease_token,
        },
    )


def _release(claim: Claim) -> None:
    """Free the key after the request raised. A claim with a linked object is not deleted
    (a retry would make a second one) but its lease ends now: the next retry takes it over
    and answers with the object. The request's work is abandoned first; the release is a
    checkpoint of its own, kept though the request then rolls back."""
    db.session.rollback()
    params = {"livemode": claim.livemode, "key": claim.key, "token": claim.lease_token}
    db.session.execute(
        text(
            "DELETE FROM idempotency_keys WHERE livemode = :livemode AND key = :key "
            "AND lease_token = :token AND object_id IS NULL"
        ),
        params,
    )
    db.session.execute(
        text(
            "UPDATE idempotency_keys SET locked_at = '-infinity' "
            "WHERE livemode = :livemode AND key = :key AND lease_token = :token"
        ),
        params,
    )
    checkpoint(Checkpoint.IDEMPOTENCY_CLAIM)


def purge_expired_keys(now: datetime | None = None) -> int:
    """Delete the current tenant's keys older than RETENTION, in the caller's unit of work;
    returns how many."""
    cutoff = (now or datetime.now(UTC)) - RETENTION
    return db.session.execute(
        text("DELETE FROM idempotency_keys WHERE created_at < :cutoff"), {"cutoff": cutoff}
    ).rowcount
