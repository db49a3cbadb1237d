"""Dashboard: payments — the filterable list (cursor pages, CSV export), one payment with
the raw Daraja outcome, and its live status as server-sent events."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta

from flask import Response, current_app, g, render_template, request, stream_with_context
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import IntegerField, SelectField, StringField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import NumberRange, Optional, ValidationError

from core.api import paginate
from core.extensions import db
from core.phone import normalize_phone
from core.streams import capped_event_stream
from core.tenancy import tenant_scope
from frontend.dashboard import bp
from frontend.fields import EatDayField
from payments import reports, service
from payments.models import StkPush
from payments.schemas import MAX_AMOUNT, STATUSES

PAGE_SIZE = 25
# A status stream stays open at most this long, re-reads the database this often in case a
# Redis nudge was missed, and sends a comment now and then so proxies keep it open.
STREAM_MAX_SECONDS = 600
STREAM_POLL_SECONDS = 2.0
STREAM_HEARTBEAT_SECONDS = 15.0
STREAMS_PER_MEMBER = 3


class PaymentFilterForm(FlaskForm):
    """The list's filters, read from the query string (a GET form: no CSRF token)."""

    class Meta:
        csrf = False

    status = SelectField(
        "Status",
        choices=[SelectChoice("", "Any status")]
        + [SelectChoice(s, s.capitalize()) for s in STATUSES],
        default="",
    )
    phone_number = StringField("Phone number", validators=[Optional()])
    date_from = EatDayField("From (EAT)")
    date_to = EatDayField("To (EAT)")
    amount_min = IntegerField(
        "Min amount (KES)", validators=[Optional(), NumberRange(min=1, max=MAX_AMOUNT)]
    )
    amount_max = IntegerField(
        "Max amount (KES)", validators=[Optional(), NumberRange(min=1, max=MAX_AMOUNT)]
    )

    def validate_phone_number(self, field):
        if field.data and normalize_phone(field.data) is None:
            raise ValidationError("Must be a Kenyan mobile number, e.g. 0708374149.")

    def filters(self) -> dict:
        """The filters to apply: every field that is filled in and valid (a mistyped field
        is reported and left out, the others still apply)."""
        self.validate()

        def ok(field):
            return field.data not in (None, "") and not field.errors

        filters = {}
        if ok(self.status):
            filters["status"] = self.status.data
        if ok(self.phone_number):
            filters["phone_number"] = normalize_phone(self.phone_number.data)
        if ok(self.date_from):
            filters["created_gte"] = reports.eat_day(self.date_from.data)[0]
        if ok(self.date_to):
            filters["created_lte"] = reports.eat_day(self.date_to.data)[1] - timedelta(
                microseconds=1
            )
        if ok(self.amount_min):
            filters["amount_gte"] = self.amount_min.data
        if ok(self.amount_max):
            filters["amount_lte"] = self.amount_max.data
        return filters


def _filter_form() -> PaymentFilterForm:
    return PaymentFilterForm(formdata=request.args)


@bp.get("/payments")
def payments():
    form = _filter_form()
    filters = form.filters()
    statement = reports.filtered_pushes_statement(livemode=g.livemode, **filters)
    page = paginate(
        statement,
        StkPush.id,
        limit=PAGE_SIZE,
        starting_after=request.args.get("starting_after") or None,
        ending_before=request.args.get("ending_before") or None,
    )
    export_args = {
        name: value
        for name, value in request.args.items()
        if value and name not in ("starting_after", "ending_before")
    }
    return render_template(
        "dashboard/payments.html",
        form=form,
        page=page,
        filtered=bool(filters),
        export_args=export_args,
    )


@bp.get("/payments/export")
def payments_export():
    """The list's filters as CSV, every matching payment (not one page), newest first."""
    form = _filter_form()
    statement = reports.filtered_pushes_statement(livemode=g.livemode, **form.filters())
    # The request's unit ends before the body streams: the CSV is read in the generator's
    # own tenant scope.
    tenant_id = g.tenant.id
    mode = "live" if g.livemode else "test"
    filename = f"lango-payments-{mode}-{datetime.now(service.EAT):%Y%m%d-%H%M}.csv"
    return Response(
        stream_with_context(reports.pushes_csv(statement, tenant_id)),
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


@bp.get("/payments/<string:push_id>")
def payment(push_id: str):
    detail = reports.push_detail(push_id, livemode=g.livemode)  # NotFound → 404 page
    return render_template(
        "dashboard/payment.html",
        push=detail.push,
        callbacks=detail.callbacks,
        review_case=detail.review_case,
        pretty=_pretty_json,
    )


def _pretty_json(body: str) -> str:
    try:
        return json.dumps(json.loads(body), indent=2, ensure_ascii=False)
    except ValueError:
        return body


@bp.get("/payments/<string:push_id>/stream")
def payment_stream(push_id: str):
    """Server-sent events: one JSON message (reports.status_message) at each status change,
    ending with the final one. `?mode=test|live` follows a push of the other mode (the test
    console sends test pushes whichever mode the dashboard shows)."""
    mode = request.args.get("mode")
    livemode = g.livemode if mode not in ("test", "live") else mode == "live"
    service.get_push(push_id, livemode=livemode)  # 404 before the stream starts
    # The request's unit ends before the body streams: no transaction is held open while
    # the stream lasts.
    tenant_id = g.tenant.id
    # Each open stream holds a web thread: a member's tabs may hold only a few.
    holder = f"member:{current_user.id}"
    return capped_event_stream(holder, STREAMS_PER_MEMBER, _status_events(tenant_id, push_id))


def _status_events(tenant_id: str, push_id: str):
    """Like the API's stream (payments/api.py): Redis nudges, with the database as the truth,
    re-read every STREAM_POLL_SECONDS. Runs after the view returned, so each read enters the
    tenant's scope itself (and ends its transaction)."""
    pubsub = current_app.extensions["lango.redis"].pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(service.status_channel(push_id))
    try:
        last_status = None
        started = last_sent = time.monotonic()
        while time.monotonic() - started < STREAM_MAX_SECONDS:
            with tenant_scope(tenant_id):
                push = db.session.get(StkPush, push_id)
                message = reports.status_message(push) if push is not None else None
            if message is None:  # gone (the tenant was deleted meanwhile)
                return
            if message["status"] != last_status:
                last_status = message["status"]
                last_sent = time.monotonic()
                yield f"data: {json.dumps(message)}\n\n"
                if message["final"]:
                    return
            elif time.monotonic() - last_sent > STREAM_HEARTBEAT_SECONDS:
                last_sent = time.monotonic()
                yield ": keep-alive\n\n"
            pubsub.get_message(timeout=STREAM_POLL_SECONDS)
    finally:
        pubsub.close()
