"""Idempotency-Key for POST endpoints (tenant schema), exact under concurrency.

The first request with a key claims it with an INSERT … ON CONFLICT DO NOTHING committed on
its own, so of any number of simultaneous requests exactly one executes. It then stores its
status and body; a retry with the same key and body gets that response again
(`Idempotent-Replayed: true`). Same key with another body → 409 idempotency_key_reused; same
key while the first is still running → 409 idempotency_key_in_use. Validation failures never
reach here (they are not stored, so a corrected retry works), and a request that crashes
releases its claim so it can be retried.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from functools import wraps

from flask import Response, g, jsonify, request
from sqlalchemy import text

from core import crypto
from core.errors import Conflict, LangoError, ValidationFailed, handle_lango_error
from core.extensions import db

MAX_KEY_LENGTH = 255
# Marks a stored answer kept encrypted (it shows a secret).
_ENCRYPTED = "lango_encrypted_response"
# Keys are kept at least this long (Stripe keeps 24 h); older ones are purged.
RETENTION = timedelta(hours=24)


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
        livemode = g.caller.livemode
        stored = _claim(livemode, key, _request_hash())
        if stored is not None:
            return stored
        try:
            response = view(*args, **kwargs)
        except LangoError as error:
            response = handle_lango_error(error)
        except BaseException:
            _release(livemode, key)
            raise
        if not isinstance(response, Response):
            response = jsonify(response)
        _complete(livemode, key, response, encrypt=secret_in_response)
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


def _claim(livemode: bool, key: str, request_hash: str) -> Response | None:
    """Claim the key (None: go ahead) or answer for an earlier request with it."""
    db.session.rollback()
    claimed = db.session.execute(
        text(
            "INSERT INTO idempotency_keys (livemode, key, request_hash) "
            "VALUES (:livemode, :key, :hash) ON CONFLICT DO NOTHING RETURNING key"
        ),
        {"livemode": livemode, "key": key, "hash": request_hash},
    ).scalar()
    if claimed is not None:
        db.session.commit()
        return None
    row = db.session.execute(
        text(
            "SELECT request_hash, response_status, response_body FROM idempotency_keys "
            "WHERE livemode = :livemode AND key = :key"
        ),
        {"livemode": livemode, "key": key},
    ).one()
    db.session.rollback()
    if row.request_hash != request_hash:
        raise IdempotencyKeyReused(param="Idempotency-Key")
    if row.response_status is None:
        raise IdempotencyKeyInUse(param="Idempotency-Key", headers={"Retry-After": "1"})
    body = row.response_body
    if isinstance(body, dict) and set(body) == {_ENCRYPTED}:
        body = json.loads(crypto.decrypt(body[_ENCRYPTED]))
    replay = jsonify(body)
    replay.status_code = row.response_status
    replay.headers["Idempotent-Replayed"] = "true"
    return replay


def _complete(livemode: bool, key: str, response: Response, *, encrypt: bool) -> None:
    body = response.get_data(as_text=True)
    if encrypt:
        body = json.dumps({_ENCRYPTED: crypto.encrypt(body)})
    db.session.rollback()
    db.session.execute(
        text(
            "UPDATE idempotency_keys SET response_status = :status, "
            "response_body = CAST(:body AS jsonb), completed_at = now() "
            "WHERE livemode = :livemode AND key = :key"
        ),
        {
            "status": response.status_code,
            "body": body,
            "livemode": livemode,
            "key": key,
        },
    )
    db.session.commit()


def _release(livemode: bool, key: str) -> None:
    db.session.rollback()
    db.session.execute(
        text("DELETE FROM idempotency_keys WHERE livemode = :livemode AND key = :key"),
        {"livemode": livemode, "key": key},
    )
    db.session.commit()


def purge_expired_keys(now: datetime | None = None) -> int:
    """Delete the current tenant's keys older than RETENTION; returns how many."""
    cutoff = (now or datetime.now(UTC)) - RETENTION
    deleted = db.session.execute(
        text("DELETE FROM idempotency_keys WHERE created_at < :cutoff"), {"cutoff": cutoff}
    ).rowcount
    db.session.commit()
    return deleted
