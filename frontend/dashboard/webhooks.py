"""Dashboard: webhooks — the current mode's endpoints (create, edit, enable/disable, rotate
the signing secret, send a test ping, delete) and its events with every delivery attempt
(redeliver). Everyone reads; owners and developers change things.

A signing secret is shown once, in the answer to the POST that issued it (never stored in
the session cookie, never on a later page). The rules — https in live mode, no private
addresses unless the server allows them, the plan's endpoint limit — are webhooks.endpoints';
its refusals come back as field errors or flashes. What the pages say about retries, disabling
and private addresses is read from the WEBHOOK_* settings that decide them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from flask import (
    current_app,
    flash,
    g,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_wtf import FlaskForm
from wtforms import HiddenField, SelectField, SelectMultipleField, StringField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import URL, DataRequired, Length, Optional
from wtforms.widgets import CheckboxInput, ListWidget

from core.api import paginate
from core.errors import LangoError, ValidationFailed
from core.events import Event
from core.extensions import db
from frontend.auth import EDITORS, can_edit, require_role
from frontend.dashboard import bp
from frontend.formatting import duration
from webhooks import endpoints, events, service
from webhooks.models import DeliveryStatus, WebhookEndpoint

PER_PAGE = 25
# What each event type means, for the checkboxes and filters (webhooks.endpoints.EVENT_TYPES).
EVENT_LABELS = {
    "payment.succeeded": "A payment succeeded",
    "payment.failed": "A payment failed",
    "payment.cancelled": "The customer cancelled a payment",
    "payment.expired": "A payment prompt expired unanswered",
    "payment.flagged": "M-Pesa reported something Lango held for review (see flagged_reason)",
    "webhook_endpoint.disabled": "Lango disabled an endpoint that kept failing",
    "ping": "Test pings",
}
EVENT_CHOICES = [
    SelectChoice(endpoints.ALL_EVENTS, "All events, including types added later"),
    *[
        SelectChoice(name, f"{name} — {EVENT_LABELS.get(name, name)}")
        for name in endpoints.EVENT_TYPES
    ],
]
GRACE_CHOICES = [
    SelectChoice("86400", "24 hours (recommended)"),
    SelectChoice("3600", "1 hour"),
    SelectChoice("0", "None — the old secret stops at once"),
]


class MultiCheckboxField(SelectMultipleField):
    widget = ListWidget(prefix_label=False)
    option_widget = CheckboxInput()


class EndpointForm(FlaskForm):
    url = StringField(
        "Endpoint URL",
        validators=[
            DataRequired(),
            Length(max=2048),
            URL(require_tld=False, message="Enter a full URL, e.g. https://example.co.ke/hooks."),
        ],
    )
    description = StringField("Description", validators=[Optional(), Length(max=255)])
    enabled_events = MultiCheckboxField(
        "Events to send",
        choices=EVENT_CHOICES,
        default=[endpoints.ALL_EVENTS],
        validators=[DataRequired(message="Choose at least one event type.")],
    )


class RotateForm(FlaskForm):
    grace = SelectField("Keep the old secret signing too for", choices=GRACE_CHOICES)


class RedeliverForm(FlaskForm):
    endpoint_id = HiddenField()  # empty: every endpoint the event was for


class EventFilterForm(FlaskForm):
    class Meta:
        csrf = False  # a GET filter: nothing changes

    type = SelectField(
        "Type",
        choices=[SelectChoice("", "All types"), *map(SelectChoice, endpoints.EVENT_TYPES)],
        default="",
    )
    delivery_status = SelectField(
        "Delivery status",
        choices=[
            SelectChoice("", "Any"),
            *[SelectChoice(status.value) for status in DeliveryStatus],
        ],
        default="",
    )


# --- endpoints ---------------------------------------------------------------------------


@bp.get("/webhooks")
def webhooks():
    return _endpoint_list(EndpointForm())


@bp.post("/webhooks")
@require_role(*EDITORS)
def webhooks_create():
    form = EndpointForm()
    if not form.validate():
        return _endpoint_list(form, 400)
    try:
        with db.session.begin_nested():
            issued = endpoints.create_endpoint(
                livemode=g.livemode,
                url=form.url.data.strip(),
                description=form.description.data or None,
                enabled_events=form.enabled_events.data,
            )
    except LangoError as error:
        _show_error(form, error)
        return _endpoint_list(form, error.status)
    flash("Endpoint added. Copy its signing secret now.", "success")
    return _secret_page(issued, "created")


@bp.get("/webhooks/<endpoint_id>")
def webhooks_endpoint(endpoint_id: str):
    endpoint = endpoints.get_endpoint(endpoint_id, livemode=g.livemode)
    form = EndpointForm(
        data={
            "url": endpoint.url,
            "description": endpoint.description,
            "enabled_events": list(endpoint.enabled_events),
        }
    )
    return _endpoint_page(endpoint, form)


@bp.post("/webhooks/<endpoint_id>")
@require_role(*EDITORS)
def webhooks_endpoint_update(endpoint_id: str):
    endpoint = endpoints.get_endpoint(endpoint_id, livemode=g.livemode)
    form = EndpointForm()
    if not form.validate():
        return _endpoint_page(endpoint, form, 400)
    try:
        with db.session.begin_nested():
            endpoints.update_endpoint(
                endpoint_id,
                livemode=g.livemode,
                url=form.url.data.strip(),
                description=form.description.data or None,
                enabled_events=form.enabled_events.data,
            )
    except LangoError as error:
        _show_error(form, error)
        endpoint = endpoints.get_endpoint(endpoint_id, livemode=g.livemode)
        return _endpoint_page(endpoint, form, error.status)
    flash("Endpoint saved.", "success")
    return redirect(url_for("dashboard.webhooks_endpoint", endpoint_id=endpoint_id))


@bp.post("/webhooks/<endpoint_id>/enabled")
@require_role(*EDITORS)
def webhooks_endpoint_enabled(endpoint_id: str):
    enable = request.form.get("enabled") == "true"
    endpoints.update_endpoint(endpoint_id, livemode=g.livemode, enabled=enable)
    if enable:
        flash("Endpoint enabled; events it missed while disabled are being sent.", "success")
    else:
        flash("Endpoint disabled; no events are sent to it until you enable it.", "success")
    return redirect(url_for("dashboard.webhooks_endpoint", endpoint_id=endpoint_id))


@bp.post("/webhooks/<endpoint_id>/rotate")
@require_role(*EDITORS)
def webhooks_endpoint_rotate(endpoint_id: str):
    form = RotateForm()
    if not form.validate():
        flash("Choose how long the old secret keeps signing.", "error")
        return redirect(url_for("dashboard.webhooks_endpoint", endpoint_id=endpoint_id))
    grace = timedelta(seconds=int(form.grace.data))
    issued = endpoints.rotate_secret(endpoint_id, livemode=g.livemode, grace=grace)
    flash("New signing secret issued. Copy it now.", "success")
    return _secret_page(issued, "rotated", grace=grace)


@bp.post("/webhooks/<endpoint_id>/test")
@require_role(*EDITORS)
def webhooks_endpoint_test(endpoint_id: str):
    event = endpoints.send_test_event(endpoint_id, livemode=g.livemode)
    flash("Test ping sent. Its delivery attempts appear below as they happen.", "success")
    return redirect(url_for("dashboard.webhooks_event", event_id=event.id))


@bp.post("/webhooks/<endpoint_id>/delete")
@require_role(*EDITORS)
def webhooks_endpoint_delete(endpoint_id: str):
    deleted = endpoints.delete_endpoint(endpoint_id, livemode=g.livemode)
    flash(f"Endpoint {deleted.url} deleted.", "success")
    return redirect(url_for("dashboard.webhooks"))


def _endpoint_list(form: EndpointForm, status: int = 200):
    statement = endpoints.list_endpoints_statement(livemode=g.livemode)
    page = paginate(statement, WebhookEndpoint.id, limit=PER_PAGE, **_cursor())
    body = render_template(
        "dashboard/webhooks.html",
        page=page,
        form=form,
        can_edit=can_edit(),
        delivery=_delivery_policy(),
    )
    return body, status


def _endpoint_page(endpoint: WebhookEndpoint, form: EndpointForm, status: int = 200):
    body = render_template(
        "dashboard/webhook.html",
        endpoint=endpoint,
        form=form,
        rotate_form=RotateForm(formdata=None, grace="86400"),
        can_edit=can_edit(),
        delivery=_delivery_policy(),
        now_utc=datetime.now(UTC),
    )
    return body, status


@dataclass(frozen=True)
class DeliveryPolicy:
    """What the pages promise about delivery, read from the settings that decide it, so a
    changed WEBHOOK_* setting changes the words too."""

    retries: int
    retry_span: str  # the schedule's length (±10% jitter each step)
    disable_after: str
    private_targets_allowed: bool

    @property
    def disabled_reasons(self) -> dict[str, str]:
        return {
            "manual": "disabled by a member of your team",
            "gone": "the receiver answered 410 Gone",
            "failing": f"deliveries failed for {self.disable_after} without a success",
        }


def _delivery_policy() -> DeliveryPolicy:
    settings = current_app.extensions["lango.settings"]
    return DeliveryPolicy(
        retries=len(settings.WEBHOOK_RETRY_SCHEDULE),
        retry_span=duration(sum(settings.WEBHOOK_RETRY_SCHEDULE)),
        disable_after=duration(settings.WEBHOOK_DISABLE_AFTER_SECONDS),
        private_targets_allowed=settings.WEBHOOK_ALLOW_PRIVATE_TARGETS,
    )


def _secret_page(issued: endpoints.IssuedEndpoint, change: str, grace: timedelta | None = None):
    """The one page that shows a signing secret: the answer to the POST that issued it.
    Not cached anywhere, so Back or a shared computer cannot show it again."""
    response = make_response(
        render_template(
            "dashboard/webhook_secret.html",
            endpoint=issued.endpoint,
            secret=issued.secret,
            change=change,
            grace=grace,
        )
    )
    response.headers["Cache-Control"] = "no-store"
    return response


def _show_error(form: FlaskForm, error: LangoError) -> None:
    """A service refusal as field errors where it names a field (e.g. an unsafe URL),
    otherwise as a flash."""
    placed = False
    fields = dict(error.errors or {})
    if not fields and error.param:
        fields = {error.param: [error.message]}
    for name, messages in fields.items():
        field = getattr(form, name, None)
        if field is not None and hasattr(field, "errors"):
            field.errors = [*field.errors, *messages]
            placed = True
    if not placed or not isinstance(error, ValidationFailed):
        flash(error.message, "error")


def _cursor() -> dict:
    return {
        name: request.args[name]
        for name in ("starting_after", "ending_before")
        if request.args.get(name)
    }


# --- events ------------------------------------------------------------------------------


@bp.get("/webhooks/events")
def webhooks_events():
    form = EventFilterForm(formdata=request.args)
    if not form.validate():
        return render_template("dashboard/events.html", form=form, page=None, counts={}), 400
    statement = events.list_events_statement(
        livemode=g.livemode,
        type=form.type.data or None,
        delivery_status=form.delivery_status.data or None,
    )
    page = paginate(statement, Event.id, limit=PER_PAGE, **_cursor())
    counts = events.delivery_counts(event.id for event in page["data"])
    return render_template("dashboard/events.html", form=form, page=page, counts=counts)


@bp.get("/webhooks/events/<event_id>")
def webhooks_event(event_id: str):
    detail = events.get_event(event_id, livemode=g.livemode)
    named = endpoints.endpoints_by_id(
        [delivery.endpoint_id for delivery in detail.deliveries], livemode=g.livemode
    )
    payload = json.dumps(service.event_payload(detail.event), indent=2, ensure_ascii=False)
    pending = any(d.status is DeliveryStatus.PENDING for d in detail.deliveries)
    return render_template(
        "dashboard/event.html",
        event=detail,
        payload=payload,
        endpoints=named,
        pending=pending,
        can_edit=can_edit(),
    )


@bp.post("/webhooks/events/<event_id>/redeliver")
@require_role(*EDITORS)
def webhooks_event_redeliver(event_id: str):
    form = RedeliverForm()
    endpoint_id = form.endpoint_id.data or None
    try:
        with db.session.begin_nested():
            deliveries = events.redeliver_event(
                event_id, livemode=g.livemode, endpoint_id=endpoint_id
            )
    except LangoError as error:
        # An unknown event is a 404 page; an unknown endpoint for a known event a flash.
        if error.param != "endpoint_id":
            raise
        flash(error.message, "error")
    else:
        if deliveries:
            flash(f"Sending again to {len(deliveries)} endpoint(s).", "success")
        else:
            flash("No enabled endpoint wants this event; nothing to send.", "info")
    return redirect(url_for("dashboard.webhooks_event", event_id=event_id))
