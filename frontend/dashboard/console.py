"""Dashboard: test console — send a TEST push to any number (the Daraja sandbox's magic
numbers pick the outcome) and watch it resolve live. Whatever mode the dashboard shows, the
console sends test pushes only: no money ever moves from here."""

from __future__ import annotations

from flask import flash, g, redirect, render_template, request, url_for
from flask_wtf import FlaskForm
from wtforms import IntegerField, StringField
from wtforms.validators import (
    DataRequired,
    InputRequired,
    Length,
    NumberRange,
    Regexp,
    ValidationError,
)

from compliance.audit import Actor, ActorType
from core.errors import LangoError, NotFound
from core.phone import normalize_phone
from frontend.auth import EDITORS, require_role
from frontend.dashboard import bp
from payments import service
from payments.sandbox.outcomes import MAGIC_NUMBERS
from payments.schemas import MAX_AMOUNT
from tenants.service import Caller

DEFAULT_PHONE = "254708374149"
DARAJA_TEXT = r"^[A-Za-z0-9 ._-]+$"
# What each of the sandbox's magic numbers does (README, conventions.md); any other number
# succeeds like the first.
MAGIC_NUMBER_HINTS = {
    "254708374149": "Succeeds after a few seconds, with an M-Pesa receipt number.",
    "254700000001": "Fails: insufficient funds (ResultCode 1).",
    "254700001032": "Cancelled by the customer (1032).",
    "254700001037": "Fails: phone unreachable (1037).",
    "254700001019": "Expires: no PIN entered (1019).",
    "254700002001": "Fails: wrong PIN (2001).",
    "254700001001": "Refused at once by Daraja (subscriber locked); the push fails at once.",
    "254700000099": "No callback ever arrives; reconciliation (STK query) finds it succeeded.",
    "254700000098": "Succeeds; the callback arrives twice and is applied once.",
    "254700000097": "Succeeds; the callback arrives after about a minute.",
}


class TestPushForm(FlaskForm):
    phone_number = StringField("Phone number", validators=[DataRequired()])
    amount = IntegerField(
        "Amount (KES)",
        validators=[
            InputRequired(),
            NumberRange(min=1, max=MAX_AMOUNT, message=f"From 1 to {MAX_AMOUNT:,} KES."),
        ],
    )
    account_reference = StringField(
        "Account reference",
        validators=[
            DataRequired(),
            Length(max=12),
            Regexp(DARAJA_TEXT, message="Letters, digits, spaces, . _ - only."),
        ],
    )
    description = StringField(
        "Description",
        validators=[
            DataRequired(),
            Length(max=13),
            Regexp(DARAJA_TEXT, message="Letters, digits, spaces, . _ - only."),
        ],
    )

    def validate_phone_number(self, field):
        if normalize_phone(field.data or "") is None:
            raise ValidationError(
                "Must be a Kenyan mobile number, e.g. 0708374149 or 254708374149."
            )


def magic_numbers() -> list[dict]:
    return [
        {
            "phone": phone,
            "result_code": outcome.result_code,
            "hint": MAGIC_NUMBER_HINTS.get(phone, "See the API docs."),
        }
        for phone, outcome in MAGIC_NUMBERS.items()
    ]


def _render(form: TestPushForm, push_id: str | None = None, status: int = 200):
    push = None
    if push_id:
        try:
            push = service.get_push(push_id, livemode=False)
        except NotFound:
            flash("That test push is not in this account.", "error")
    return (
        render_template(
            "dashboard/console.html",
            form=form,
            push=push,
            magic_numbers=magic_numbers(),
            can_send=g.member.role in EDITORS,
        ),
        status,
    )


@bp.get("/console")
def console():
    form = TestPushForm(
        formdata=None,
        data={
            "phone_number": normalize_phone(request.args.get("phone", "")) or DEFAULT_PHONE,
            "amount": 1,
            "account_reference": "TEST",
            "description": "Test payment",
        },
    )
    return _render(form, request.args.get("push"))


@bp.post("/console")
@require_role(*EDITORS)
def send_test_push():
    form = TestPushForm()
    if not form.validate_on_submit():
        flash("Check the highlighted fields.", "error")
        return _render(form, status=400)
    member = g.member
    # The console acts for the signed-in member, not an API key: there is no key id, so the
    # member's id stands in, and the audit trail names the member.
    caller = Caller(g.tenant.id, member.id, livemode=False, live_enabled=g.tenant.live_enabled)
    request_ = service.PushRequest(
        phone_number=normalize_phone(form.phone_number.data),
        amount=form.amount.data,
        account_reference=form.account_reference.data.strip(),
        description=form.description.data.strip(),
        metadata={"source": "dashboard_test_console", "member_id": member.id},
    )
    # No savepoint: a push commits before Daraja is called (a checkpoint), and initiate_push
    # leaves nothing partial when it raises (a refused push stays, failed, as shown below).
    try:
        push = service.initiate_push(
            caller, request_, actor=Actor(ActorType.MEMBER, member.id, member.email)
        )
    except LangoError as error:
        flash(error.message, "error")
        # Daraja refused it: the push exists (failed); show it beside the message.
        return _render(form, error.details.get("stk_push_id"), status=error.status)
    flash(f"Test push sent to {push.phone_number}; watch it resolve below.", "success")
    return redirect(url_for("dashboard.console", push=push.id))
