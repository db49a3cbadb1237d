"""The admin console: tenants, plans, queues and workers, staff accounts.

Every page needs a full staff session (password and TOTP) with the admin role. The views
call the same services as `/v1/admin` (staff.tenants, staff.plans, staff.service) and
staff.queues, which `lango queues` uses too.
"""

from __future__ import annotations

import segno
from flask import current_app, flash, g, make_response, redirect, render_template, request, url_for
from flask_wtf import FlaskForm
from markupsafe import Markup
from marshmallow import ValidationError
from wtforms import (
    BooleanField,
    EmailField,
    IntegerField,
    PasswordField,
    SelectField,
    SelectMultipleField,
    StringField,
    TextAreaField,
)
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Email, InputRequired, Length, Optional
from wtforms.widgets import CheckboxInput, ListWidget

from compliance.audit import AuditAction
from core.errors import Conflict, LangoError, ValidationFailed
from core.extensions import db
from frontend.auth import page_blueprint, staff_area
from staff import plans as plan_admin
from staff import queues as queue_health
from staff import service as staff_service
from staff import tenants as tenant_admin
from staff.models import StaffRole
from staff.schemas import AdminPlanCreateSchema, AdminPlanUpdateSchema

bp = page_blueprint("admin", __name__, url_prefix="/admin")
staff_area(bp, StaffRole.ADMIN)

TENANTS_PER_PAGE = 25


# --- forms ---------------------------------------------------------------------------------


class TenantSearchForm(FlaskForm):
    """The tenants list's filters (a GET form: no CSRF token)."""

    class Meta:
        csrf = False

    q = StringField(
        "Search",
        validators=[Optional(), Length(max=254)],
        render_kw={"placeholder": "Business name, tenant id or email"},
    )
    status = SelectField(
        "Status",
        choices=[
            SelectChoice("", "Any status"),
            SelectChoice("active", "Active"),
            SelectChoice("suspended", "Suspended"),
        ],
        validators=[Optional()],
    )
    plan = SelectField("Plan", choices=[SelectChoice("", "Any plan")], validators=[Optional()])


class SuspendForm(FlaskForm):
    reason = TextAreaField(
        "Reason",
        validators=[DataRequired("Say why the tenant is suspended."), Length(min=3, max=2000)],
        render_kw={"rows": 3},
    )


class PlanForm(FlaskForm):
    """A plan's fields; the rules are AdminPlanCreateSchema's/AdminPlanUpdateSchema's, the
    same as for the JSON API (checked in `_plan_fields`)."""

    code = StringField("Code", render_kw={"placeholder": "growth"})
    name = StringField("Name", validators=[InputRequired()])
    monthly_price = IntegerField("Monthly price (KES)", validators=[InputRequired()])
    included_pushes = IntegerField("Included live pushes per month", validators=[InputRequired()])
    overage_price = IntegerField("Overage price per push (KES)", validators=[Optional()])
    rate_limit = StringField(
        "Rate limit per tenant", validators=[InputRequired()], default="10 per second"
    )
    max_webhook_endpoints = IntegerField("Webhook endpoints", validators=[InputRequired()])
    livemode_allowed = BooleanField("Live mode allowed")
    test_allowance = IntegerField("Test pushes per month", validators=[InputRequired()])
    position = IntegerField("Position in the catalog", validators=[Optional()], default=0)


class MultiCheckboxField(SelectMultipleField):
    widget = ListWidget(prefix_label=False)
    option_widget = CheckboxInput()


class StaffForm(FlaskForm):
    email = EmailField("Email", validators=[InputRequired(), Email(), Length(max=254)])
    name = StringField("Name", validators=[InputRequired(), Length(max=100)])
    roles = MultiCheckboxField(
        "Roles",
        choices=[
            SelectChoice(StaffRole.ADMIN.value, "Admin"),
            SelectChoice(StaffRole.COMPLIANCE.value, "Compliance"),
        ],
        validators=[InputRequired("Pick at least one role.")],
    )
    password = PasswordField(
        "Initial password",
        validators=[InputRequired(), Length(min=12, max=256)],
        render_kw={"autocomplete": "new-password"},
    )


# --- tenants -------------------------------------------------------------------------------


@bp.get("")
def home():
    return redirect(url_for("admin.tenants"))


@bp.get("/tenants")
def tenants():
    form = TenantSearchForm(formdata=request.args)
    form.plan.choices = [SelectChoice("", "Any plan")] + [
        (plan.code, plan.name) for plan in plan_admin.list_all_plans()
    ]
    if not form.validate():
        return render_template("admin/tenants.html", form=form, page=None), 400
    page = tenant_admin.search_tenants(
        status=form.status.data or None,
        plan=form.plan.data or None,
        email=None,
        query=form.q.data or None,
        limit=TENANTS_PER_PAGE,
        starting_after=request.args.get("starting_after") or None,
        ending_before=request.args.get("ending_before") or None,
    )
    filtered = bool(form.q.data or form.status.data or form.plan.data)
    return render_template("admin/tenants.html", form=form, page=page, filtered=filtered)


@bp.get("/tenants/<tenant_id>")
def tenant(tenant_id: str):
    return _tenant_page(tenant_id, SuspendForm())


@bp.post("/tenants/<tenant_id>/suspend")
def tenant_suspend(tenant_id: str):
    form = SuspendForm()
    if not form.validate():
        return _tenant_page(tenant_id, form, status=400)
    reason = form.reason.data.strip()
    try:
        with db.session.begin_nested():
            view = tenant_admin.suspend_tenant(tenant_id, reason=reason, staff_id=g.staff.id)
    except (Conflict, ValidationFailed) as error:  # an unknown tenant is the 404 page
        flash(error.message, "error")
        return _tenant_page(tenant_id, form, status=error.status)
    tenant_admin.audit_lifecycle(
        AuditAction.TENANT_SUSPENDED, tenant_id, after={"reason": reason}, staff=g.staff
    )
    flash(f"{view.business_name} suspended: its API keys no longer work.", "success")
    return redirect(url_for("admin.tenant", tenant_id=tenant_id))


@bp.post("/tenants/<tenant_id>/reinstate")
def tenant_reinstate(tenant_id: str):
    try:
        with db.session.begin_nested():
            view = tenant_admin.reinstate_tenant(tenant_id, staff_id=g.staff.id)
    except Conflict as error:  # not suspended; an unknown tenant is the 404 page
        flash(error.message, "error")
        return _tenant_page(tenant_id, SuspendForm(), status=error.status)
    tenant_admin.audit_lifecycle(
        AuditAction.TENANT_REINSTATED, tenant_id, after={"status": "active"}, staff=g.staff
    )
    flash(f"{view.business_name} reinstated: its API keys work again.", "success")
    return redirect(url_for("admin.tenant", tenant_id=tenant_id))


def _tenant_page(tenant_id: str, form: SuspendForm, status: int = 200):
    detail = tenant_admin.get_tenant_detail(tenant_id)
    return render_template("admin/tenant.html", detail=detail, t=detail.view, form=form), status


# --- plans ---------------------------------------------------------------------------------


@bp.get("/plans")
def plans():
    return render_template("admin/plans.html", plans=plan_admin.list_all_plans())


@bp.route("/plans/new", methods=["GET", "POST"])
def plans_new():
    form = PlanForm()
    if form.validate_on_submit():
        fields = _plan_fields(form, AdminPlanCreateSchema(), with_code=True)
        if fields is not None:
            try:
                with db.session.begin_nested():
                    plan = plan_admin.create_plan(g.staff, fields)
            except LangoError as error:
                _form_error(form, error)
            else:
                flash(f"Plan {plan.name} ({plan.code}) created.", "success")
                return redirect(url_for("admin.plans"))
    status = 400 if form.is_submitted() else 200
    return render_template("admin/plan_form.html", form=form, plan=None), status


@bp.route("/plans/<code>", methods=["GET", "POST"])
def plans_edit(code: str):
    plan = plan_admin.get_any_plan(code)
    form = PlanForm(obj=plan)
    if form.validate_on_submit():
        fields = _plan_fields(form, AdminPlanUpdateSchema(), with_code=False)
        if fields is not None:
            try:
                with db.session.begin_nested():
                    plan = plan_admin.update_plan(g.staff, code, fields)
            except LangoError as error:
                _form_error(form, error)
            else:
                flash(f"Plan {plan.name} ({plan.code}) saved.", "success")
                return redirect(url_for("admin.plans"))
    status = 400 if form.is_submitted() else 200
    return render_template("admin/plan_form.html", form=form, plan=plan), status


@bp.post("/plans/<code>/retire")
def plans_retire(code: str):
    try:
        with db.session.begin_nested():
            plan = plan_admin.retire_plan(g.staff, code)
    except Conflict as error:  # already retired; an unknown code is the 404 page
        flash(error.message, "error")
    else:
        flash(
            f"Plan {plan.name} ({plan.code}) retired: subscribers keep it, nobody new can "
            "choose it.",
            "success",
        )
    return redirect(url_for("admin.plans"))


def _plan_fields(form: PlanForm, schema, *, with_code: bool) -> dict | None:
    """The form's values checked by the API's schema; None (with field errors) if invalid."""
    names = ["code"] * with_code + [n for n in plan_admin.PLAN_FIELDS if n != "active"]
    raw = {name: getattr(form, name).data for name in names}
    if raw.get("position") is None:
        raw["position"] = 0
    if with_code:
        raw["code"] = (raw["code"] or "").strip()
    try:
        return schema.load(raw)
    except ValidationError as error:
        for name, messages in error.normalized_messages().items():
            field = getattr(form, name, None)
            target = field.errors if field is not None else form.form_errors
            target.extend(messages if isinstance(messages, list) else [str(messages)])
        return None


def _form_error(form: FlaskForm, error: LangoError) -> None:
    field = getattr(form, error.param, None) if error.param else None
    if field is not None and hasattr(field, "errors"):
        field.errors = [*field.errors, error.message]
    else:
        flash(error.message, "error")


# --- queues and workers ----------------------------------------------------------------------


@bp.get("/queues")
def queues():
    health = queue_health.queue_health(current_app.extensions["lango.redis"])
    return render_template("admin/queues.html", health=health)


# --- staff accounts ---------------------------------------------------------------------------


@bp.get("/staff")
def staff():
    people = staff_service.list_staff()
    pressure = {person.id: staff_service.sign_in_pressure(person) for person in people}
    return render_template("admin/staff.html", people=people, pressure=pressure)


@bp.route("/staff/new", methods=["GET", "POST"])
def staff_new():
    form = StaffForm()
    if form.validate_on_submit():
        try:
            with db.session.begin_nested():
                provisioned = staff_service.create_staff(
                    form.email.data,
                    form.name.data.strip(),
                    form.password.data,
                    form.roles.data,
                    created_by=g.staff,
                )
        except staff_service.StaffExists as error:
            form.email.errors = [*form.email.errors, error.message]
        except LangoError as error:
            _form_error(form, error)
        else:
            flash(f"Staff account {provisioned.staff.email} created.", "success")
            # The TOTP secret and recovery codes exist in this response only: never in the
            # session, a redirect or a cache.
            qr = _qr_svg(provisioned.provisioning_uri)
            response = make_response(
                render_template("admin/staff_created.html", provisioned=provisioned, qr=qr)
            )
            response.headers["Cache-Control"] = "no-store"
            return response
    status = 400 if form.is_submitted() else 200
    return render_template("admin/staff_new.html", form=form), status


def _qr_svg(data: str) -> Markup:
    """The provisioning URI as an inline SVG QR code (no image request, works offline)."""
    svg = segno.make(data, error="m").svg_inline(
        scale=4, dark="#17212b", light="#ffffff", title="TOTP QR code", svgclass="qr"
    )
    # segno writes the SVG itself (path data and our constant title), no text of ours.
    return Markup(svg)  # noqa: S704
