"""HTTP endpoints for KYC: the tenant submits and follows its review (API key). Parse, call
compliance.kyc, serialise. Compliance staff's review endpoints under /v1/admin live in staff
(staff.kyc_api)."""

from __future__ import annotations

from compliance import kyc
from compliance.schemas import (
    KycDocumentSchema,
    KycDocumentUploadSchema,
    KycSubmissionCreateSchema,
    KycSubmissionSchema,
)
from core.api import Blueprint, errors
from tenants.auth import current_caller

kyc_records = Blueprint("kyc_records", __name__, description="Your KYC for live mode")


@kyc_records.post("/v1/compliance/kyc")
@kyc_records.arguments(KycSubmissionCreateSchema)
@kyc_records.response(201, KycSubmissionSchema)
@errors(kyc_records, 400, 401, 403, 409)
def submit_kyc(body):
    """Submit your business details for live mode; compliance reviews them. Attach documents
    with POST /v1/compliance/kyc/documents. 409 while one awaits review or once approved."""
    return kyc.submit_kyc(current_caller().tenant_id, body)


@kyc_records.get("/v1/compliance/kyc")
@kyc_records.response(200, KycSubmissionSchema)
@errors(kyc_records, 401, 403, 404)
def get_kyc():
    """Your latest KYC submission: its status and, if rejected, the reason."""
    return kyc.latest_submission(current_caller().tenant_id)


@kyc_records.post("/v1/compliance/kyc/documents")
@kyc_records.arguments(KycDocumentUploadSchema, location="files")
@kyc_records.response(201, KycDocumentSchema)
@errors(kyc_records, 400, 401, 403, 404)
def upload_kyc_document(files):
    """Attach a document (multipart/form-data, field `file`) to your submission awaiting
    review. Stored outside the database; its SHA-256 is returned."""
    upload = files["file"]
    return kyc.add_document(
        current_caller().tenant_id,
        filename=upload.filename or "",
        content_type=upload.mimetype or "",
        stream=upload.stream,
    )
