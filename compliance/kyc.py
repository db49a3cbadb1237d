"""KYC: a tenant's business details for live mode, and compliance staff's decision on them.

A tenant submits its details (and uploads documents to that submission); compliance staff
approve it, which turns live mode on for the tenant, or reject it with a reason the tenant
sees. Document bytes are kept outside the database, under KYC_STORAGE_DIR, with a SHA-256
recorded for each; a document whose transaction rolls back has its file removed. Every
decision is audited in the decision's own transaction. Functions flush; the caller commits.
"""

from __future__ import annotations

import enum
import hashlib
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from flask import current_app
from sqlalchemy import DateTime, ForeignKey, Integer, String, Text, event, func, select
from sqlalchemy.orm import Mapped, Session, SessionTransaction, mapped_column

from compliance import audit
from core.api import paginate
from core.errors import Conflict, NotFound, ValidationFailed
from core.extensions import db
from core.ids import new_id
from tenants.models import Tenant

DEFAULT_STORAGE_DIR = ".lango/kyc"
# A KRA PIN: a letter, nine digits, a letter (e.g. P051234567X).
KRA_PIN = re.compile(r"^[A-Z][0-9]{9}[A-Z]$")
DOCUMENT_TYPES = {"application/pdf", "image/png", "image/jpeg"}
_CHUNK = 64 * 1024
# Files stored by the session's open transaction: removed if it rolls back.
_STORED_FILES = "lango.kyc_stored_files"


class KycStatus(enum.StrEnum):
    SUBMITTED = "submitted"
    APPROVED = "approved"
    REJECTED = "rejected"


class KycSubmission(db.Model):
    __tablename__ = "kyc_submissions"
    __table_args__ = {"schema": "public"}

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("public.tenants.id"), index=True)
    legal_name: Mapped[str] = mapped_column(String(200))
    registration_number: Mapped[str] = mapped_column(String(60))
    kra_pin: Mapped[str] = mapped_column(String(11))
    director_name: Mapped[str] = mapped_column(String(200))
    director_id_number: Mapped[str] = mapped_column(String(40))
    contact_email: Mapped[str] = mapped_column(String(254))
    contact_phone: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(20), default=KycStatus.SUBMITTED.value)
    rejection_reason: Mapped[str | None] = mapped_column(Text)
    reviewed_by: Mapped[str | None] = mapped_column(ForeignKey("public.staff_users.id"))
    reviewed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    submitted_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )

    @property
    def documents(self) -> list[KycDocument]:
        return list(
            db.session.scalars(
                select(KycDocument)
                .where(KycDocument.submission_id == self.id)
                .order_by(KycDocument.id)
            )
        )


class KycDocument(db.Model):
    __tablename__ = "kyc_documents"
    __table_args__ = {"schema": "public"}

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    submission_id: Mapped[str] = mapped_column(ForeignKey("public.kyc_submissions.id"), index=True)
    filename: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(100))
    size: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    # Relative to KYC_STORAGE_DIR, built from ids only (never the uploaded name).
    storage_path: Mapped[str] = mapped_column(String(500))
    uploaded_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )


class KycPending(Conflict):
    code = "kyc_pending"
    message = "A KYC submission is already awaiting review."


class KycAlreadyApproved(Conflict):
    code = "kyc_already_approved"
    message = "This account's KYC is already approved; live mode is on."


class KycAlreadyDecided(Conflict):
    code = "kyc_already_decided"
    message = "This KYC submission has already been approved or rejected."


class KycMissing(NotFound):
    code = "resource_missing"
    message = "No such KYC submission."


# --- tenant side --------------------------------------------------------------------------


def submit_kyc(tenant_id: str, details: dict) -> KycSubmission:
    """Record the tenant's business details for review. Raises KycPending while an earlier
    submission awaits review, KycAlreadyApproved once approved; a rejected tenant may submit
    again. Serialised per tenant (row lock on the tenant)."""
    if not KRA_PIN.match(details["kra_pin"]):
        raise ValidationFailed(
            "kra_pin: a KRA PIN is a letter, nine digits and a letter (e.g. P051234567X).",
            param="kra_pin",
        )
    db.session.scalar(select(Tenant).where(Tenant.id == tenant_id).with_for_update())
    latest = find_latest_submission(tenant_id)
    if latest is not None and latest.status == KycStatus.SUBMITTED:
        raise KycPending()
    if latest is not None and latest.status == KycStatus.APPROVED:
        raise KycAlreadyApproved()
    submission = KycSubmission(id=new_id("kyc"), tenant_id=tenant_id, **details)
    db.session.add(submission)
    db.session.flush()
    return submission


def latest_submission(tenant_id: str) -> KycSubmission:
    """The tenant's latest submission, with its status and any rejection reason."""
    submission = find_latest_submission(tenant_id)
    if submission is None:
        raise KycMissing("No KYC submission yet: POST /v1/compliance/kyc.")
    return submission


def add_document(
    tenant_id: str, *, filename: str, content_type: str, stream: IO[bytes]
) -> KycDocument:
    """Store one document for the tenant's submission awaiting review: the bytes go to
    KYC_STORAGE_DIR (never the database), the row keeps size and SHA-256. Raises KycMissing
    when no submission awaits review, ValidationFailed for an unaccepted type or an empty
    file. Flushed; the stored file is removed if the transaction rolls back."""
    if content_type not in DOCUMENT_TYPES:
        raise ValidationFailed(
            f"file: send a PDF, PNG or JPEG (got {content_type or 'no type'}).", param="file"
        )
    submission = find_latest_submission(tenant_id)
    if submission is None or submission.status != KycStatus.SUBMITTED:
        raise KycMissing("No KYC submission awaits review: POST /v1/compliance/kyc first.")
    document_id = new_id("kycdoc")
    relative = Path(tenant_id) / submission.id / document_id
    target = storage_dir() / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    digest, size = hashlib.sha256(), 0
    with open(target, "wb") as out:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
            out.write(chunk)
    if size == 0:
        target.unlink(missing_ok=True)
        raise ValidationFailed("file: the file is empty.", param="file")
    document = KycDocument(
        id=document_id,
        submission_id=submission.id,
        filename=(filename or "document")[:255],
        content_type=content_type,
        size=size,
        sha256=digest.hexdigest(),
        storage_path=str(relative),
    )
    db.session.info.setdefault(_STORED_FILES, []).append(target)
    db.session.add(document)
    db.session.flush()
    return document


@event.listens_for(Session, "after_commit")
def _keep_stored_files(session: Session) -> None:
    session.info.pop(_STORED_FILES, None)


@event.listens_for(Session, "after_soft_rollback")
def _remove_stored_files(session: Session, previous: SessionTransaction) -> None:
    # The whole transaction, not a savepoint: its documents' rows are gone, so are their files.
    if previous.parent is None:
        for path in session.info.pop(_STORED_FILES, []):
            path.unlink(missing_ok=True)


def storage_dir() -> Path:
    return Path(current_app.config.get("KYC_STORAGE_DIR") or DEFAULT_STORAGE_DIR).resolve()


def find_latest_submission(tenant_id: str) -> KycSubmission | None:
    """The tenant's latest submission, or None (the admin console shows it beside the
    tenant)."""
    return db.session.scalar(
        select(KycSubmission)
        .where(KycSubmission.tenant_id == tenant_id)
        .order_by(KycSubmission.id.desc())
        .limit(1)
    )


# --- compliance side ----------------------------------------------------------------------


def list_submissions(*, status: str | None, limit: int, **cursor) -> dict:
    """The review queue, newest first; filter by status."""
    statement = select(KycSubmission)
    if status:
        statement = statement.where(KycSubmission.status == status)
    return paginate(statement, KycSubmission.id, limit=limit, **cursor)


def get_submission(submission_id: str) -> KycSubmission:
    submission = db.session.get(KycSubmission, submission_id)
    if submission is None:
        raise KycMissing()
    return submission


def document_file(submission_id: str, document_id: str) -> tuple[KycDocument, Path]:
    """A submission's document and where its bytes are stored, for a compliance user to
    download. Raises KycMissing when the document is not this submission's or its file is
    gone."""
    document = db.session.get(KycDocument, document_id)
    if document is None or document.submission_id != submission_id:
        raise KycMissing("No such KYC document.")
    root = storage_dir()
    path = (root / document.storage_path).resolve()
    # storage_path is built from ids only; refuse anything that would leave the store anyway.
    if not path.is_relative_to(root) or not path.is_file():
        raise KycMissing("This document's file is missing from storage.")
    return document, path


def approve_submission(submission_id: str, *, staff_id: str, staff_label: str) -> KycSubmission:
    """Approve a submission awaiting review and turn live mode on for its tenant (live keys
    then work once it also has M-Pesa credentials and a live-capable plan). Atomic with its
    audit entry. Raises KycMissing, KycAlreadyDecided."""
    submission = _decidable(submission_id)
    tenant = db.session.scalar(
        select(Tenant).where(Tenant.id == submission.tenant_id).with_for_update()
    )
    submission.status = KycStatus.APPROVED.value
    submission.reviewed_by = staff_id
    submission.reviewed_at = datetime.now(UTC)
    before = tenant.live_enabled
    tenant.live_enabled = True
    _record(
        audit.AuditAction.KYC_APPROVED,
        submission,
        staff_id,
        staff_label,
        {
            "before": {"status": "submitted", "live_enabled": before},
            "after": {"status": "approved", "live_enabled": True},
        },
    )
    return submission


def reject_submission(
    submission_id: str, *, reason: str, staff_id: str, staff_label: str
) -> KycSubmission:
    """Reject a submission awaiting review with a reason the tenant sees; live mode stays as
    it was. Atomic with its audit entry. Raises KycMissing, KycAlreadyDecided."""
    submission = _decidable(submission_id)
    submission.status = KycStatus.REJECTED.value
    submission.rejection_reason = reason
    submission.reviewed_by = staff_id
    submission.reviewed_at = datetime.now(UTC)
    _record(
        audit.AuditAction.KYC_REJECTED,
        submission,
        staff_id,
        staff_label,
        {"before": {"status": "submitted"}, "after": {"status": "rejected", "reason": reason}},
    )
    return submission


def _decidable(submission_id: str) -> KycSubmission:
    submission = db.session.scalar(
        select(KycSubmission).where(KycSubmission.id == submission_id).with_for_update()
    )
    if submission is None:
        raise KycMissing()
    if submission.status != KycStatus.SUBMITTED:
        raise KycAlreadyDecided()
    return submission


def _record(action, submission: KycSubmission, staff_id: str, label: str, diff: dict) -> None:
    audit.record(
        action,
        target_type="kyc_submission",
        target_id=submission.id,
        tenant_id=submission.tenant_id,
        diff=diff,
        actor=audit.Actor(audit.ActorType.STAFF, staff_id, label),
    )
