"""Compliance console: KYC review — the queue of submissions, their documents, and approval
(which turns live mode on) or rejection with a reason the tenant sees."""

from __future__ import annotations

from flask import flash, g, redirect, render_template, request, send_file, url_for
from flask_wtf import FlaskForm
from wtforms import SelectField, TextAreaField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Length

from compliance import console, kyc
from core.errors import LangoError, NotFound
from core.extensions import db
from frontend.compliance import ALL, PAGE_SIZE, bp, cursor_args, enum_choices


class KycFilterForm(FlaskForm):
    class Meta:
        csrf = False

    status = SelectField(
        "Status",
        choices=[*enum_choices(kyc.KycStatus, str.capitalize), SelectChoice(ALL, "All")],
        default=kyc.KycStatus.SUBMITTED.value,
    )


class RejectForm(FlaskForm):
    reason = TextAreaField("Reason (the tenant sees it)", [DataRequired(), Length(max=2000)])


@bp.get("/kyc", endpoint="kyc")
def kyc_queue():
    form = KycFilterForm(request.args)
    if not form.validate():
        return render_template("compliance/kyc.html", form=form, page=None), 400
    status = None if form.status.data == ALL else form.status.data
    page = kyc.list_submissions(status=status, limit=PAGE_SIZE, **cursor_args())
    names = console.tenant_names(submission.tenant_id for submission in page["data"])
    return render_template("compliance/kyc.html", form=form, page=page, names=names)


def _kyc_page(submission_id: str, status: int = 200, reject: RejectForm | None = None):
    submission = kyc.get_submission(submission_id)
    page = render_template(
        "compliance/kyc_detail.html",
        submission=submission,
        tenant_name=console.tenant_names([submission.tenant_id]).get(submission.tenant_id),
        reject=reject or RejectForm(formdata=None),
    )
    return page, status


@bp.get("/kyc/<submission_id>")
def kyc_detail(submission_id: str):
    return _kyc_page(submission_id)


@bp.get("/kyc/<submission_id>/documents/<document_id>")
def kyc_document(submission_id: str, document_id: str):
    kyc.get_submission(submission_id)
    document, path = kyc.document_file(submission_id, document_id)
    response = send_file(
        path,
        mimetype=document.content_type,
        as_attachment=True,
        download_name=document.filename,
        max_age=0,
    )
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Cache-Control"] = "private, no-store"
    return response


@bp.post("/kyc/<submission_id>/approve")
def kyc_approve(submission_id: str):
    try:
        with db.session.begin_nested():
            kyc.approve_submission(submission_id, staff_id=g.staff.id, staff_label=g.staff.email)
    except NotFound:
        raise
    except LangoError as error:
        flash(error.message, "error")
        return redirect(url_for("compliance.kyc_detail", submission_id=submission_id))
    flash("KYC approved: live mode is on for this tenant.", "success")
    return redirect(url_for("compliance.kyc_detail", submission_id=submission_id))


@bp.post("/kyc/<submission_id>/reject")
def kyc_reject(submission_id: str):
    form = RejectForm()
    if not form.validate():
        return _kyc_page(submission_id, 400, reject=form)
    try:
        with db.session.begin_nested():
            kyc.reject_submission(
                submission_id,
                reason=form.reason.data.strip(),
                staff_id=g.staff.id,
                staff_label=g.staff.email,
            )
    except NotFound:
        raise
    except LangoError as error:
        flash(error.message, "error")
        return redirect(url_for("compliance.kyc_detail", submission_id=submission_id))
    flash("KYC rejected; the tenant sees your reason.", "success")
    return redirect(url_for("compliance.kyc_detail", submission_id=submission_id))
