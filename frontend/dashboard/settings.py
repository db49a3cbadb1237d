"""Dashboard: settings — owners only. The live M-Pesa (Daraja) credentials, with write-only
secret fields; KYC for live mode (submit details, upload documents, read the decision); and
the tenant's audit trail.

Credentials: the page shows what is stored masked (never a secret, not even in the form's
value). A secret field left blank keeps the stored secret, so the shortcode can be changed
without typing the secrets again; the first save needs all three
(payments.credentials.change_credentials).
"""

from __future__ import annotations

import json

from flask import flash, g, redirect, render_template, request, url_for
from flask_wtf import FlaskForm
from flask_wtf.file import FileField, FileRequired
from wtforms import PasswordField, SelectField, StringField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Email, Length, Optional, Regexp

from compliance import audit, kyc
from core.errors import LangoError
from core.extensions import db
from frontend.auth import require_role
from frontend.dashboard import bp
from payments import credentials
from tenants.models import MemberRole

AUDIT_PER_PAGE = 25
AUDIT_ON_SETTINGS = 5
DIGITS = Regexp(r"^\d{5,7}$", message="5 to 7 digits.")

KYC_FIELDS = (
    "legal_name",
    "registration_number",
    "kra_pin",
    "director_name",
    "director_id_number",
    "contact_email",
    "contact_phone",
)


def _strip(value):
    return value.strip() if isinstance(value, str) else value


def _secret_field(label: str) -> PasswordField:
    # A PasswordField never renders its value back into the page.
    return PasswordField(label, filters=[_strip], validators=[Optional(), Length(min=8, max=200)])


class CredentialsForm(FlaskForm):
    shortcode = StringField("Shortcode", filters=[_strip], validators=[DataRequired(), DIGITS])
    kind = SelectField(
        "Kind",
        choices=[SelectChoice("paybill", "Paybill"), SelectChoice("till", "Till (Buy Goods)")],
    )
    till_number = StringField("Till number", filters=[_strip], validators=[Optional(), DIGITS])
    consumer_key = _secret_field("Consumer key")
    consumer_secret = _secret_field("Consumer secret")
    passkey = _secret_field("Passkey")

    def validate(self, extra_validators=None) -> bool:
        # Not an inline validator: Optional() ends the field's chain when it is blank.
        valid = super().validate(extra_validators)
        if self.kind.data == "till" and not self.till_number.data:
            self.till_number.errors = [*self.till_number.errors, "A till needs its till number."]
            return False
        return valid


def _upper(value):
    return value.strip().upper() if isinstance(value, str) else value


class KycForm(FlaskForm):
    legal_name = StringField(
        "Registered business name", filters=[_strip], validators=[DataRequired(), Length(max=200)]
    )
    registration_number = StringField(
        "Registration number", filters=[_strip], validators=[DataRequired(), Length(max=60)]
    )
    kra_pin = StringField(
        "KRA PIN",
        filters=[_upper],
        validators=[
            DataRequired(),
            Regexp(kyc.KRA_PIN.pattern, message="A letter, nine digits and a letter."),
        ],
    )
    director_name = StringField(
        "Director's full name", filters=[_strip], validators=[DataRequired(), Length(max=200)]
    )
    director_id_number = StringField(
        "Director's ID number", filters=[_strip], validators=[DataRequired(), Length(max=40)]
    )
    contact_email = StringField(
        "Contact email", filters=[_strip], validators=[DataRequired(), Email(), Length(max=254)]
    )
    contact_phone = StringField(
        "Contact phone",
        filters=[_strip],
        validators=[
            DataRequired(),
            Regexp(r"^\+?[0-9]{9,15}$", message="A phone number, e.g. 254712345678."),
        ],
    )


class KycDocumentForm(FlaskForm):
    file = FileField("Document (PDF, PNG or JPEG, up to 1 MB)", validators=[FileRequired()])


class AuditFilterForm(FlaskForm):
    class Meta:
        csrf = False  # a GET filter: nothing changes

    action = SelectField(
        "Action",
        choices=[
            SelectChoice("", "All actions"),
            *[SelectChoice(action.value) for action in audit.AuditAction],
        ],
        default="",
    )


# --- the page ----------------------------------------------------------------------------


@bp.get("/settings")
@require_role(MemberRole.OWNER)
def settings():
    return _settings_page()


@bp.post("/settings/credentials")
@require_role(MemberRole.OWNER)
def settings_credentials():
    form = CredentialsForm()
    if not form.validate():
        return _settings_page(credentials_form=form, status=400)
    try:
        with db.session.begin_nested():
            credentials.change_credentials(
                g.tenant.id,
                shortcode=form.shortcode.data,
                kind=form.kind.data,
                till_number=form.till_number.data or None,
                consumer_key=form.consumer_key.data or None,
                consumer_secret=form.consumer_secret.data or None,
                passkey=form.passkey.data or None,
            )
    except LangoError as error:
        _field_errors(form, error)
        return _settings_page(credentials_form=form, status=error.status)
    flash("M-Pesa credentials saved. The secrets are stored encrypted.", "success")
    return redirect(url_for("dashboard.settings", _anchor="mpesa"))


@bp.post("/settings/kyc")
@require_role(MemberRole.OWNER)
def settings_kyc():
    form = KycForm()
    if not form.validate():
        return _settings_page(kyc_form=form, status=400)
    details = {name: getattr(form, name).data for name in KYC_FIELDS}
    try:
        with db.session.begin_nested():
            kyc.submit_kyc(g.tenant.id, details)
    except LangoError as error:
        _field_errors(form, error)
        return _settings_page(kyc_form=form, status=error.status)
    flash(
        "Business details submitted. Add your documents below; compliance reviews them "
        "and live mode turns on when they approve.",
        "success",
    )
    return redirect(url_for("dashboard.settings", _anchor="kyc"))


@bp.post("/settings/kyc/documents")
@require_role(MemberRole.OWNER)
def settings_kyc_document():
    form = KycDocumentForm()
    if not form.validate():
        return _settings_page(document_form=form, status=400)
    upload = form.file.data
    try:
        with db.session.begin_nested():
            document = kyc.add_document(
                g.tenant.id,
                filename=upload.filename or "",
                content_type=upload.mimetype or "",
                stream=upload.stream,
            )
    except LangoError as error:
        _field_errors(form, error)
        return _settings_page(document_form=form, status=error.status)
    flash(f"{document.filename} uploaded.", "success")
    return redirect(url_for("dashboard.settings", _anchor="kyc"))


def _settings_page(credentials_form=None, kyc_form=None, document_form=None, status=200):
    stored = credentials.get_credentials(g.tenant.id)
    if credentials_form is None:
        credentials_form = CredentialsForm(
            formdata=None,
            data={
                "shortcode": stored.shortcode if stored else "",
                "kind": stored.kind if stored else "paybill",
                "till_number": stored.till_number if stored else "",
            },
        )
    try:
        submission = kyc.latest_submission(g.tenant.id)
    except kyc.KycMissing:
        submission = None
    if kyc_form is None:
        # After a rejection, start from what was sent, to correct it.
        previous = {name: getattr(submission, name) for name in KYC_FIELDS} if submission else {}
        kyc_form = KycForm(formdata=None, data=previous)
    recent = audit.list_entries(g.tenant.id, limit=AUDIT_ON_SETTINGS)
    body = render_template(
        "dashboard/settings.html",
        stored=stored,
        credentials_form=credentials_form,
        submission=submission,
        documents=submission.documents if submission else [],
        kyc_form=kyc_form,
        document_form=document_form or KycDocumentForm(formdata=None),
        recent=recent["data"],
        describe_diff=_describe_diff,
    )
    return body, status


def _field_errors(form: FlaskForm, error: LangoError) -> None:
    """A service refusal as field errors where it names fields, else as a flash."""
    fields = dict(error.errors or {})
    if not fields and error.param:
        fields = {error.param: [error.message.split(": ", 1)[-1]]}
    placed = False
    for name, messages in fields.items():
        field = getattr(form, name, None)
        if field is not None and hasattr(field, "errors"):
            field.errors = [*field.errors, *messages]
            placed = True
    if not placed:
        flash(error.message, "error")


# --- audit trail -------------------------------------------------------------------------


@bp.get("/settings/audit")
@require_role(MemberRole.OWNER)
def settings_audit():
    form = AuditFilterForm(formdata=request.args)
    if not form.validate():
        body = render_template(
            "dashboard/settings_audit.html", form=form, page=None, describe_diff=_describe_diff
        )
        return body, 400
    cursor = {
        name: request.args[name]
        for name in ("starting_after", "ending_before")
        if request.args.get(name)
    }
    page = audit.list_entries(
        g.tenant.id, limit=AUDIT_PER_PAGE, action=form.action.data or None, **cursor
    )
    return render_template(
        "dashboard/settings_audit.html", form=form, page=page, describe_diff=_describe_diff
    )


def _describe_diff(diff: dict | None) -> str:
    """An entry's before/after, as compact JSON for the page."""
    if not diff:
        return ""
    return json.dumps(diff, ensure_ascii=False, sort_keys=True, indent=1)
