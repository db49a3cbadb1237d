"""The compliance console: audit log (search, CSV export, chain check), the fraud review
queue, fraud rules (with a dry run before saving) and KYC review.

Views are thin: a form in, one service call (compliance.console, compliance.dry_run,
compliance.audit, compliance.kyc — the same functions as /v1/admin), a flash, a redirect.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

from flask import (
    Response,
    flash,
    g,
    redirect,
    render_template,
    request,
    send_file,
    session,
    stream_with_context,
    url_for,
)
from flask_wtf import FlaskForm
from wtforms import (
    BooleanField,
    DateField,
    HiddenField,
    IntegerField,
    SelectField,
    StringField,
    TextAreaField,
)
from wtforms.fields.choices import SelectChoice
from wtforms.validators import (
    AnyOf,
    DataRequired,
    InputRequired,
    Length,
    NumberRange,
    Optional,
    ValidationError,
)

from compliance import console, dry_run, kyc
from compliance.audit import ActorType, AuditAction, verify_chain
from compliance.fraud import Outcome, ReviewStatus
from core.errors import LangoError, NotFound
from frontend.auth import page_blueprint, staff_area
from frontend.formatting import EAT
from staff.models import StaffRole

bp = page_blueprint("compliance", __name__, url_prefix="/compliance")
staff_area(bp, StaffRole.COMPLIANCE)

PAGE_SIZE = 50
ALL = "all"


def _cursor() -> dict:
    return {
        "starting_after": request.args.get("starting_after") or None,
        "ending_before": request.args.get("ending_before") or None,
    }


def _show_error(form: FlaskForm, error: LangoError) -> None:
    """A service's error on the form field it names (e.g. `expression`), else as a flash."""
    field = getattr(form, error.param or "", None)
    if field is None:
        flash(error.message, "error")
        return
    field.errors = [*field.errors, error.message.removeprefix(f"{error.param}: ")]


def _choices(values, label=str) -> list[SelectChoice]:
    return [SelectChoice(value.value, label(value.value)) for value in values]


def _staff_choices() -> list[SelectChoice]:
    return [SelectChoice(staff.id, staff.email) for staff in console.compliance_staff()]


@bp.get("")
def home():
    return redirect(url_for("compliance.audit"))


# --- audit log --------------------------------------------------------------------------------


class AuditFilterForm(FlaskForm):
    class Meta:
        csrf = False  # a search (GET) changes nothing

    tenant_id = StringField("Tenant id", [Optional(), Length(max=40)])
    actor_type = SelectField(
        "Actor type", choices=[SelectChoice("", "Any actor"), *_choices(ActorType)], default=""
    )
    actor_id = StringField("Actor id", [Optional(), Length(max=64)])
    action = SelectField(
        "Action", choices=[SelectChoice("", "Any action"), *_choices(AuditAction)], default=""
    )
    occurred_gte = DateField("From (EAT)", [Optional()])
    occurred_lte = DateField("To (EAT)", [Optional()])

    def validate_occurred_lte(self, field) -> None:
        if field.data and self.occurred_gte.data and field.data < self.occurred_gte.data:
            raise ValidationError("The end date is before the start date.")

    def filters(self) -> dict:
        """The service's filters: empty fields left out, EAT days as UTC bounds."""
        filters = {
            name: getattr(self, name).data.strip()
            for name in ("tenant_id", "actor_type", "actor_id", "action")
            if (getattr(self, name).data or "").strip()
        }
        if self.occurred_gte.data:
            filters["occurred_gte"] = _eat_midnight(self.occurred_gte.data)
        if self.occurred_lte.data:
            end = _eat_midnight(self.occurred_lte.data + timedelta(days=1))
            filters["occurred_lte"] = end - timedelta(microseconds=1)
        return filters


def _eat_midnight(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=EAT).astimezone(UTC)


def diff_summary(diff: dict | None, limit: int = 140) -> str:
    """An entry's reason or changed fields in a line: `reason: …` / `outcome: block → review`."""
    if not isinstance(diff, dict):
        return ""
    before = diff.get("before") if isinstance(diff.get("before"), dict) else {}
    after = diff.get("after") if isinstance(diff.get("after"), dict) else {}
    parts = []
    for key, value in after.items():
        if key in before and before[key] == value:
            continue
        parts.append(f"{key}: {before[key]} → {value}" if key in before else f"{key}: {value}")
    summary = "; ".join(parts)
    return summary if len(summary) <= limit else summary[: limit - 1] + "…"


@bp.get("/audit")
def audit():
    form = AuditFilterForm(request.args)
    chain = session.pop("audit_chain", None)
    if not form.validate():
        return render_template("compliance/audit.html", form=form, page=None, chain=chain), 400
    page = console.search_audit_log(limit=PAGE_SIZE, **_cursor(), **form.filters())
    names = console.tenant_names(entry.tenant_id for entry in page["data"])
    export_args = {k: v for k, v in request.args.items() if k not in _cursor() and v}
    return render_template(
        "compliance/audit.html",
        form=form,
        page=page,
        names=names,
        chain=chain,
        export_url=url_for("compliance.audit_export", **export_args),
        diff_summary=diff_summary,
    )


@bp.get("/audit/export")
def audit_export():
    form = AuditFilterForm(request.args)
    if not form.validate():
        flash("Fix the filters before exporting.", "error")
        return render_template("compliance/audit.html", form=form, page=None, chain=None), 400
    return Response(
        stream_with_context(console.export_audit_log(**form.filters())),
        mimetype="text/csv",
        headers={"Content-Disposition": 'attachment; filename="lango-audit-log.csv"'},
    )


@bp.post("/audit/verify")
def audit_verify():
    report = verify_chain()
    result = {"ok": report.ok, "entries": report.entries, "checked_at": datetime.now(UTC)}
    if report.ok:
        flash(f"The audit chain is intact: {report.entries:,} entries checked.", "success")
    else:
        bad = report.first_bad
        result.update(seq=bad.seq, id=bad.id, problem=report.problem)
        flash(
            f"The audit chain is broken at seq {bad.seq} ({bad.id}): {report.problem}. "
            f"{report.entries:,} entries checked.",
            "error",
        )
    session["audit_chain"] = result
    return redirect(url_for("compliance.audit"))


# --- fraud review queue -----------------------------------------------------------------------


class CaseFilterForm(FlaskForm):
    class Meta:
        csrf = False

    status = SelectField(
        "Status",
        choices=[*_choices(ReviewStatus, str.capitalize), SelectChoice(ALL, "All")],
        default=ReviewStatus.OPEN.value,
    )


class AssignForm(FlaskForm):
    staff_id = SelectField("Assign to", choices=[])


class NoteForm(FlaskForm):
    note = TextAreaField("Note", [DataRequired(), Length(max=2000)])


class ResolveForm(FlaskForm):
    resolution = HiddenField(
        validators=[AnyOf([ReviewStatus.LEGITIMATE.value, ReviewStatus.FRAUDULENT.value])]
    )
    note = TextAreaField("Note (kept on the case and in the audit log)", [Length(max=2000)])
    block_phone = BooleanField("Block this phone for the tenant")
    suspend_tenant = BooleanField("Suspend the tenant (reason: compliance)")


@bp.get("/fraud/cases")
def fraud_cases():
    form = CaseFilterForm(request.args)
    if not form.validate():
        return render_template("compliance/fraud_cases.html", form=form, page=None), 400
    status = None if form.status.data == ALL else form.status.data
    page = console.list_cases(limit=PAGE_SIZE, status=status, **_cursor())
    cases = page["data"]
    return render_template(
        "compliance/fraud_cases.html",
        form=form,
        page=page,
        pushes={case.id: console.case_push(case) for case in cases},
        names=console.tenant_names(case.tenant_id for case in cases),
        assignees=console.case_assignees([case.id for case in cases]),
    )


def _case_page(case_id: str, status: int = 200, revealed: str | None = None, **forms):
    case = console.get_case(case_id)
    assign = forms.get("assign") or AssignForm(formdata=None)
    assign.staff_id.choices = _staff_choices()
    assign.staff_id.data = assign.staff_id.data or g.staff.id
    try:
        rule = console.get_rule(case.rule_id)
    except NotFound:
        rule = None
    page = render_template(
        "compliance/fraud_case.html",
        case=case,
        push=console.case_push(case),
        rule=rule,
        tenant_name=console.tenant_names([case.tenant_id]).get(case.tenant_id),
        assignee=console.case_assignees([case.id]).get(case.id),
        revealed=revealed,
        assign=assign,
        note=forms.get("note") or NoteForm(formdata=None),
        legitimate=forms.get("legitimate") or ResolveForm(formdata=None),
        fraudulent=forms.get("fraudulent") or ResolveForm(formdata=None),
    )
    return page, status


@bp.get("/fraud/cases/<case_id>")
def fraud_cases_detail(case_id: str):
    return _case_page(case_id)


@bp.post("/fraud/cases/<case_id>/assign")
def fraud_cases_assign(case_id: str):
    form = AssignForm()
    form.staff_id.choices = _staff_choices()
    if not form.validate():
        return _case_page(case_id, 400, assign=form)
    try:
        case = console.assign_case(g.staff, case_id, form.staff_id.data)
    except NotFound:
        raise
    except LangoError as error:
        flash(error.message, "error")
        return _case_page(case_id, error.status, assign=form)
    assignee = console.case_assignees([case.id]).get(case.id)
    flash(f"Case assigned to {assignee}.", "success")
    return redirect(url_for("compliance.fraud_cases_detail", case_id=case_id))


@bp.post("/fraud/cases/<case_id>/note")
def fraud_cases_note(case_id: str):
    form = NoteForm()
    if not form.validate():
        return _case_page(case_id, 400, note=form)
    try:
        console.add_case_note(g.staff, case_id, form.note.data)
    except NotFound:
        raise
    except LangoError as error:
        _show_error(form, error)
        return _case_page(case_id, error.status, note=form)
    flash("Note added.", "success")
    return redirect(url_for("compliance.fraud_cases_detail", case_id=case_id))


@bp.post("/fraud/cases/<case_id>/reveal")
def fraud_cases_reveal(case_id: str):
    try:
        revealed = console.reveal_phone(g.staff, case_id)
    except NotFound:
        raise
    except LangoError as error:
        flash(error.message, "error")
        return redirect(url_for("compliance.fraud_cases_detail", case_id=case_id))
    flash("The full number is shown on this page only; the reveal is in the audit log.", "info")
    return _case_page(case_id, revealed=revealed["phone"])


@bp.post("/fraud/cases/<case_id>/resolve")
def fraud_cases_resolve(case_id: str):
    form = ResolveForm()
    which = "fraudulent" if form.resolution.data == ReviewStatus.FRAUDULENT.value else "legitimate"
    if not form.validate():
        flash("Choose legitimate or fraudulent.", "error")
        return _case_page(case_id, 400, **{which: form})
    try:
        case = console.resolve_case(
            g.staff,
            case_id,
            resolution=form.resolution.data,
            note=(form.note.data or "").strip(),
            block_phone=form.block_phone.data,
            suspend_tenant=form.suspend_tenant.data,
        )
    except NotFound:
        raise
    except LangoError as error:
        flash(error.message, "error")
        return _case_page(case_id, error.status, **{which: form})
    done = [f"Case resolved as {case.status}."]
    if form.block_phone.data:
        done.append("The phone is blocked for this tenant.")
    if form.suspend_tenant.data:
        done.append("The tenant is suspended.")
    flash(" ".join(done), "success")
    return redirect(url_for("compliance.fraud_cases_detail", case_id=case_id))


# --- fraud rules --------------------------------------------------------------------------------


class RuleForm(FlaskForm):
    expression = TextAreaField(
        "Expression",
        [DataRequired(), Length(max=2000)],
        render_kw={"rows": 3, "spellcheck": "false", "autocomplete": "off"},
    )
    outcome = SelectField("Outcome", choices=_choices(Outcome))
    description = StringField("Description", [Optional(), Length(max=255)])
    position = IntegerField("Position", [InputRequired(), NumberRange(min=0)])


class RuleEditForm(RuleForm):
    enabled = BooleanField("Enabled")


class RuleEnabledForm(FlaskForm):
    enabled = HiddenField(validators=[AnyOf(["0", "1"])])


class RuleMoveForm(FlaskForm):
    direction = HiddenField(validators=[AnyOf(["up", "down"])])


@bp.get("/fraud/rules")
def fraud_rules():
    return render_template("compliance/fraud_rules.html", rules=console.list_rules())


def _rule_form_page(form: RuleForm, rule=None, status: int = 200, result=None):
    page = render_template("compliance/fraud_rule_form.html", form=form, rule=rule, result=result)
    return page, status


def _dry_run(form: RuleForm, rule=None):
    """The form again with what its expression would have matched; nothing is saved."""
    if not form.expression.validate(form):
        return _rule_form_page(form, rule, 400)
    try:
        result = dry_run.dry_run_rule(form.expression.data)
    except LangoError as error:
        _show_error(form, error)
        return _rule_form_page(form, rule, error.status)
    flash(
        f"Dry run: {result.matched:,} of {result.pushes:,} pushes in the last 7 days would "
        "have matched. Nothing was saved.",
        "info",
    )
    return _rule_form_page(form, rule, result=result)


@bp.route("/fraud/rules/new", methods=["GET", "POST"])
def fraud_rules_new():
    form = RuleForm()
    if request.method == "GET":
        form.position.data = console.next_rule_position()
        form.outcome.data = Outcome.REVIEW.value
        return _rule_form_page(form)
    if "dry_run" in request.form:
        return _dry_run(form)
    if not form.validate():
        return _rule_form_page(form, status=400)
    try:
        rule = console.create_rule(
            g.staff,
            expression=form.expression.data.strip(),
            outcome=form.outcome.data,
            description=(form.description.data or "").strip(),
            position=form.position.data,
        )
    except LangoError as error:
        _show_error(form, error)
        return _rule_form_page(form, status=error.status)
    flash(f"Rule {rule.id} created; it applies to the next push screened.", "success")
    return redirect(url_for("compliance.fraud_rules"))


@bp.route("/fraud/rules/<rule_id>", methods=["GET", "POST"])
def fraud_rules_edit(rule_id: str):
    rule = console.get_rule(rule_id)
    form = RuleEditForm(obj=rule)
    if request.method == "GET":
        return _rule_form_page(form, rule)
    if "dry_run" in request.form:
        return _dry_run(form, rule)
    if not form.validate():
        return _rule_form_page(form, rule, 400)
    wanted = {
        "expression": form.expression.data.strip(),
        "outcome": form.outcome.data,
        "description": (form.description.data or "").strip(),
        "position": form.position.data,
        "enabled": form.enabled.data,
    }
    changes = {name: value for name, value in wanted.items() if getattr(rule, name) != value}
    if not changes:
        flash("Nothing changed.", "info")
        return redirect(url_for("compliance.fraud_rules"))
    try:
        console.update_rule(g.staff, rule_id, changes)
    except NotFound:
        raise
    except LangoError as error:
        _show_error(form, error)
        return _rule_form_page(form, rule, error.status)
    flash(f"Rule {rule_id} saved; it applies to the next push screened.", "success")
    return redirect(url_for("compliance.fraud_rules"))


@bp.post("/fraud/rules/<rule_id>/enabled")
def fraud_rules_toggle(rule_id: str):
    form = RuleEnabledForm()
    if not form.validate():
        flash("Say whether the rule should be enabled.", "error")
        return redirect(url_for("compliance.fraud_rules"))
    enabled = form.enabled.data == "1"
    console.update_rule(g.staff, rule_id, {"enabled": enabled})
    flash(f"Rule {rule_id} {'enabled' if enabled else 'disabled'}.", "success")
    return redirect(url_for("compliance.fraud_rules"))


@bp.post("/fraud/rules/<rule_id>/move")
def fraud_rules_move(rule_id: str):
    form = RuleMoveForm()
    if not form.validate():
        flash("Move a rule up or down.", "error")
        return redirect(url_for("compliance.fraud_rules"))
    console.move_rule(g.staff, rule_id, form.direction.data)
    flash(f"Rule {rule_id} moved {form.direction.data}.", "success")
    return redirect(url_for("compliance.fraud_rules"))


# --- KYC review -------------------------------------------------------------------------------


class KycFilterForm(FlaskForm):
    class Meta:
        csrf = False

    status = SelectField(
        "Status",
        choices=[*_choices(kyc.KycStatus, str.capitalize), SelectChoice(ALL, "All")],
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
    page = kyc.list_submissions(status=status, limit=PAGE_SIZE, **_cursor())
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
