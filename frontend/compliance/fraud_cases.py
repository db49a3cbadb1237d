"""Compliance console: the fraud review queue — cases a rule sent to review, assigned,
annotated and resolved (optionally blocking the phone or suspending the tenant)."""

from __future__ import annotations

from flask import flash, g, redirect, render_template, request, url_for
from flask_wtf import FlaskForm
from wtforms import BooleanField, HiddenField, SelectField, TextAreaField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import AnyOf, DataRequired, Length

from compliance import console
from compliance.fraud import ReviewStatus
from core.errors import LangoError, NotFound
from core.extensions import db
from frontend.compliance import ALL, PAGE_SIZE, bp, cursor_args, enum_choices, show_error


class CaseFilterForm(FlaskForm):
    class Meta:
        csrf = False

    status = SelectField(
        "Status",
        choices=[*enum_choices(ReviewStatus, str.capitalize), SelectChoice(ALL, "All")],
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
    page = console.list_cases(limit=PAGE_SIZE, status=status, **cursor_args())
    cases = page["data"]
    return render_template(
        "compliance/fraud_cases.html",
        form=form,
        page=page,
        pushes={case.id: console.case_push(case) for case in cases},
        names=console.tenant_names(case.tenant_id for case in cases),
        assignees=console.case_assignees([case.id for case in cases]),
    )


def _staff_choices() -> list[SelectChoice]:
    return [SelectChoice(staff.id, staff.email) for staff in console.compliance_staff()]


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
        with db.session.begin_nested():
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
        with db.session.begin_nested():
            console.add_case_note(g.staff, case_id, form.note.data)
    except NotFound:
        raise
    except LangoError as error:
        show_error(form, error)
        return _case_page(case_id, error.status, note=form)
    flash("Note added.", "success")
    return redirect(url_for("compliance.fraud_cases_detail", case_id=case_id))


@bp.post("/fraud/cases/<case_id>/reveal")
def fraud_cases_reveal(case_id: str):
    try:
        with db.session.begin_nested():
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
        with db.session.begin_nested():
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
