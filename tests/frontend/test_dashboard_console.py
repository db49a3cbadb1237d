"""Dashboard test console: a developer sends a TEST push to a magic number and the page
follows it until it resolves; viewers cannot send; domain refusals come back as messages."""

from __future__ import annotations

import json
import re

import pytest
from sqlalchemy import select

from compliance.audit import AuditEntry
from core.extensions import db
from core.tenancy import tenant_scope
from payments.models import StkPush
from payments.sandbox.outcomes import MAGIC_NUMBERS
from tests.frontend.conftest import HTML, member_page, post_form

ACCESS = [("/dashboard/console", member_page())]
PUSH = {"phone_number": "0711222333", "amount": "7", "account_reference": "TEST"}


def test_access(check_access):
    check_access(ACCESS)


def send(signed, **fields):
    return post_form(
        signed.client, "/dashboard/console", {**PUSH, "description": "Console", **fields}
    )


def stream_statuses(client, push_id: str) -> list[dict]:
    response = client.get(f"/dashboard/payments/{push_id}/stream?mode=test")
    assert response.status_code == 200
    return [
        json.loads(line.removeprefix("data: "))
        for line in response.get_data(as_text=True).splitlines()
        if line.startswith("data: ")
    ]


def test_the_form_has_its_defaults_and_every_magic_number(sign_in):
    page = sign_in("developer").client.get("/dashboard/console", headers=HTML)
    text = page.get_data(as_text=True)
    assert 'name="phone_number"' in text and 'value="254708374149"' in text
    assert 'name="amount"' in text and 'value="1"' in text
    assert 'name="account_reference"' in text and 'value="TEST"' in text
    assert 'name="description"' in text
    assert ">Send test push</button>" in text
    for phone in MAGIC_NUMBERS:
        assert f'href="/dashboard/console?phone={phone}"' in text
    assert "test</strong> pushes" in text


def test_a_magic_number_link_fills_the_phone(sign_in):
    page = sign_in("owner").client.get("/dashboard/console?phone=254700001032", headers=HTML)
    field = re.search(r'<input[^>]*name="phone_number"[^>]*>', page.get_data(as_text=True))
    assert 'value="254700001032"' in field.group(0)


def test_a_developer_sends_a_test_push_and_watches_it_succeed(platform, app, sign_in):
    developer = sign_in("developer")

    response = send(developer)

    assert response.status_code == 302
    push_id = re.fullmatch(r"/dashboard/console\?push=(stk_[0-9a-z]+)", response.location)[1]
    page = developer.client.get(response.location, headers=HTML).get_data(as_text=True)
    assert "Test push sent to 254711222333" in page
    panel = re.search(rf'<section[^>]*data-push="{push_id}"[^>]*>(.*?)</section>', page, re.S)
    assert panel, "no panel for the push"
    opening = panel.group(0)[: panel.group(0).index(">") + 1]
    if 'data-stream="' in opening:  # still pending when the page was drawn
        assert f"/dashboard/payments/{push_id}/stream?mode=test" in opening
        assert 'data-field="status"' in panel.group(1)

    events = stream_statuses(developer.client, push_id)

    assert events[-1]["status"] == "succeeded" and events[-1]["final"] is True
    assert events[-1]["mpesa_receipt_number"]
    with app.app_context(), tenant_scope(developer.tenant.id):
        push = db.session.get(StkPush, push_id)
        assert (push.livemode, push.amount, push.phone_number) == (False, 7, "254711222333")
        assert push.metadata_["source"] == "dashboard_test_console"
        entry = db.session.scalar(
            select(AuditEntry).where(
                AuditEntry.target_id == push_id, AuditEntry.action == "stk_push.initiated"
            )
        )
        assert (entry.actor_type, entry.actor_id) == ("member", developer.member_id)
        db.session.remove()


def test_the_console_sends_test_pushes_even_in_live_mode(platform, app, sign_in):
    owner = sign_in("owner")
    post_form(owner.client, "/dashboard/mode", {"livemode": "on"})
    page = owner.client.get("/dashboard/console", headers=HTML).get_data(as_text=True)
    assert "even while the dashboard shows live data" in page

    response = send(owner, phone_number="0711222444")

    assert response.status_code == 302
    push_id = response.location.rsplit("=", 1)[1]
    assert stream_statuses(owner.client, push_id)[-1]["status"] == "succeeded"


def test_viewers_cannot_send(sign_in, app):
    viewer = sign_in("viewer")
    page = viewer.client.get("/dashboard/console", headers=HTML).get_data(as_text=True)
    assert "Send test push" not in page
    assert send(viewer).status_code == 403
    with app.app_context(), tenant_scope(viewer.tenant.id):
        assert db.session.scalar(select(StkPush.id)) is None
        db.session.remove()


def test_invalid_fields_are_named(sign_in):
    response = send(sign_in("developer"), phone_number="12345", amount="0")
    assert response.status_code == 400
    page = response.get_data(as_text=True)
    assert "Phone number: Must be a Kenyan mobile number" in page
    assert "Amount (KES): From 1 to 250,000 KES." in page


def test_a_push_daraja_refuses_is_shown_failed_with_the_message(platform, sign_in):
    owner = sign_in("owner")
    response = send(owner, phone_number="254700001001")
    assert response.status_code == 502
    page = response.get_data(as_text=True)
    assert "M-Pesa refused the push" in page
    assert 'data-status="failed"' in page


@pytest.mark.parametrize(
    ("error", "status", "message"),
    [
        ("quota", 402, "allowance"),
        ("fraud", 403, "blocked by fraud screening"),
    ],
)
def test_domain_refusals_are_flashed(sign_in, monkeypatch, error, status, message):
    from billing.quota import QuotaExceeded
    from compliance.fraud import FraudBlocked

    # A suspended tenant's push is refused before the view, like every change from its
    # dashboard (tests/frontend/test_suspended_dashboard.py).
    owner = sign_in("owner")
    refusal = (
        QuotaExceeded("You have used your plan's test allowance.")
        if error == "quota"
        else FraudBlocked()
    )

    def refuse(*args, **kwargs):
        raise refusal

    monkeypatch.setattr("payments.service.initiate_push", refuse)

    response = send(owner)

    assert response.status_code == status
    page = response.get_data(as_text=True)
    assert "flash-error" in page and message in page
