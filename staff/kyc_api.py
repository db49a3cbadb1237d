"""KYC review under /v1/admin: compliance staff work the queue with a full staff session
holding the compliance role. Parse, call compliance.kyc, serialise. (Here, not in
compliance: compliance sits below staff and may not import its sessions.)"""

from __future__ import annotations

from flask_login import current_user

from compliance import kyc
from compliance.schemas import (
    AdminKycSubmissionListSchema,
    AdminKycSubmissionSchema,
    KycQueueQuerySchema,
    KycRejectSchema,
)
from core.api import Blueprint, errors
from staff.api import STAFF_SECURITY, require_staff
from staff.models import StaffRole

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
