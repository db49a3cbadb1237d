"""HTTP endpoints for KYC: the tenant submits and follows its review (API key); compliance
staff work the queue under /v1/admin (staff session with the compliance role). Parse, call
compliance.kyc, serialise."""

from __future__ import annotations

from flask_login import current_user
from flask_smorest.fields import Upload
from marshmallow import Schema, fields, validate

from compliance import kyc
from core.api import Blueprint, ListQuerySchema, UtcDateTime, errors, list_schema
from staff.api import STAFF_SECURITY, require_staff
from staff.models import StaffRole
from tenants.auth import current_caller

# --- schemas ------------------------------------------------------------------------------


def _text(max_length: int, **metadata):
    return fields.String(
        required=True, validate=validate.Length(min=1, max=max_length), metadata=metadata
    )


class KycSubmissionCreateSchema(Schema):
    legal_name = _text(200, example="Duka Traders Limited")
    registration_number = _text(60, example="PVT-AAA1234")
    kra_pin = fields.String(
        required=True,
        validate=validate.Regexp(
            kyc.KRA_PIN.pattern,
            error="A KRA PIN is a letter, nine digits and a letter (e.g. P051234567X).",
        ),
        metadata={"example": "P051234567X"},
    )
    director_name = _text(200, example="Achieng Otieno")
    director_id_number = _text(40, example="12345678")
    contact_email = fields.Email(required=True, validate=validate.Length(max=254))
    contact_phone = fields.String(
        required=True,
        validate=validate.Regexp(r"^\+?[0-9]{9,15}$", error="A phone number, e.g. 254712345678."),
        metadata={"example": "254712345678"},
    )


class KycDocumentSchema(Schema):
    id = fields.String(metadata={"example": "kycdoc_01jd7ab0c3xyz…"})
    object = fields.Constant("kyc_document")
    filename = fields.String()
    content_type = fields.String()
    size = fields.Integer()
    sha256 = fields.String()
    uploaded = UtcDateTime(attribute="uploaded_at")


class KycSubmissionSchema(Schema):
    id = fields.String(metadata={"example": "kyc_01jd7ab0c3xyz…"})
    object = fields.Constant("kyc_submission")
    tenant_id = fields.String()
    status = fields.String(metadata={"example": "submitted"})
    rejection_reason = fields.String(
        allow_none=True, metadata={"description": "Why compliance rejected it, when it did"}
    )
    legal_name = fields.String()
    registration_number = fields.String()
    kra_pin = fields.String()
    director_name = fields.String()
    director_id_number = fields.String()
    contact_email = fields.String()
    contact_phone = fields.String()
    documents = fields.List(fields.Nested(KycDocumentSchema))
    submitted = UtcDateTime(attribute="submitted_at")
    reviewed = UtcDateTime(attribute="reviewed_at", allow_none=True)


class AdminKycSubmissionSchema(KycSubmissionSchema):
    reviewed_by = fields.String(allow_none=True)


class KycDocumentUploadSchema(Schema):
    file = Upload(required=True, metadata={"description": "A PDF, PNG or JPEG (up to 1 MB)"})


class KycQueueQuerySchema(ListQuerySchema):
    status = fields.String(validate=validate.OneOf([s.value for s in kyc.KycStatus]))


class KycRejectSchema(Schema):
    reason = fields.String(
        required=True,
        validate=validate.Length(min=1, max=2000),
        metadata={"description": "Shown to the tenant"},
    )


AdminKycSubmissionListSchema = list_schema(AdminKycSubmissionSchema, "AdminKycSubmissionList")

# --- tenant side --------------------------------------------------------------------------

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


# --- compliance side ----------------------------------------------------------------------

admin_kyc = Blueprint(
    "admin_kyc", __name__, description="KYC review for compliance staff", authenticated=False
)
require_staff(admin_kyc, StaffRole.COMPLIANCE)


@admin_kyc.get("/v1/admin/kyc")
@admin_kyc.doc(security=STAFF_SECURITY)
@admin_kyc.arguments(KycQueueQuerySchema, location="query")
@admin_kyc.response(200, AdminKycSubmissionListSchema)
@errors(admin_kyc, 400, 401, 403)
def list_kyc(query):
    """KYC submissions, newest first; `status=submitted` is the review queue."""
    return kyc.list_submissions(
        status=query.get("status"),
        limit=query["limit"],
        starting_after=query.get("starting_after"),
        ending_before=query.get("ending_before"),
    )


@admin_kyc.post("/v1/admin/kyc/<submission_id>/approve")
@admin_kyc.doc(security=STAFF_SECURITY)
@admin_kyc.response(200, AdminKycSubmissionSchema)
@errors(admin_kyc, 401, 403, 404, 409)
def approve_kyc(submission_id: str):
    """Approve a submission: live mode turns on for its tenant. Audited."""
    return kyc.approve_submission(
        submission_id, staff_id=current_user.id, staff_label=current_user.email
    )


@admin_kyc.post("/v1/admin/kyc/<submission_id>/reject")
@admin_kyc.doc(security=STAFF_SECURITY)
@admin_kyc.arguments(KycRejectSchema)
@admin_kyc.response(200, AdminKycSubmissionSchema)
@errors(admin_kyc, 400, 401, 403, 404, 409)
def reject_kyc(body, submission_id: str):
    """Reject a submission with a reason (required) that the tenant sees. Audited."""
    return kyc.reject_submission(
        submission_id,
        reason=body["reason"],
        staff_id=current_user.id,
        staff_label=current_user.email,
    )
