"""End to end in a real browser (issue #7's acceptance): Playwright drives Debian's Chromium
against Lango served for real with PostgreSQL, Redis, an RQ worker and the Daraja sandbox
(fixtures in tests/browser.py).

  1. a business signs up → dashboard → creates an API key → sends a test push from the
     console and watches it turn `succeeded` without reloading;
  2. an admin signs in with password + TOTP → suspends that tenant (its key gets 403) →
     reinstates it (200 again);
  3. a compliance officer finds the suspension in the audit log and exports it as CSV.

Every flow also checks that no page asked any host but the app's own, that no script failed
and that no answer was a 5xx. Screenshots of each flow's final page are saved as
test-output/browser/<test name>.png in the checkout (LANGO_TEST_OUTPUT moves them), with
<test name>-phone.png on a 390x844 phone screen (flow 1's is the dashboard overview); a
failing flow leaves <test name>-failed.png.

No Chromium → the tests skip, naming the install command (they fail instead with
LANGO_REQUIRE_BROWSER=1, as in CI). Run just these with:
    ./dev.sh test tests/frontend/test_browser.py
"""

from __future__ import annotations

import csv
import io
import re
import secrets
import time
from dataclasses import replace

import pyotp
import pytest
import requests

from tests.accounts import STAFF_PASSWORD

pytestmark = pytest.mark.slow

PASSWORD = "s3cure-Passw0rd!"
MAGIC_SUCCESS = "254708374149"
STREAM_TIMEOUT_MS = 20_000


def expect(target):
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(target)


def unique(prefix: str) -> str:
    return f"{prefix} {secrets.token_hex(3)}"


def tenant_call(origin: str, secret: str) -> requests.Response:
    return requests.get(
        f"{origin}/v1/tenant", headers={"Authorization": f"Bearer {secret}"}, timeout=30
    )


def sign_up_by_api(origin: str, business_name: str) -> dict:
    """A tenant made through the public API of the served app: {id, email, secret}."""
    email = f"owner-{secrets.token_hex(4)}@example.co.ke"
    response = requests.post(
        f"{origin}/v1/signup",
        json={"business_name": business_name, "email": email, "password": PASSWORD},
        timeout=60,
    )
    assert response.status_code == 201, response.text
    body = response.json()
    return {"id": body["tenant"]["id"], "email": email, "secret": body["api_key"]["secret"]}


# TOTP steps already used per secret in this run: the server accepts each step once.
_used_steps: dict[str, int] = {}


def totp_code(secret: str) -> str:
    """The code an authenticator app shows now (the real clock), on a step not yet used."""
    step = int(time.time() // 30)
    if _used_steps.get(secret, -1) >= step:
        time.sleep(30 - time.time() % 30 + 0.5)
        step = int(time.time() // 30)
    _used_steps[secret] = step
    return pyotp.TOTP(secret).at(step * 30)


def staff_sign_in(visit, account, landing: str) -> None:
    """Through the real pages: password, then the authenticator code."""
    page = visit.page
    page.goto("/staff/login")
    page.locator("input[name=email]").fill(account.email)
    page.locator("input[name=password]").fill(STAFF_PASSWORD)
    page.get_by_role("button", name="Continue").click()
    page.wait_for_url("**/staff/login/totp")
    page.locator("input[name=code]").fill(totp_code(account.secret))
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"**{landing}*")


def phone_screenshot(visit) -> None:
    """The same page on a 390x844 phone screen, for a look (<test name>-phone.png)."""
    visit.page.set_viewport_size({"width": 390, "height": 844})
    visit.page.evaluate("document.querySelectorAll('.table-wrap').forEach(t => t.scrollLeft = 0)")
    visit.screenshot("-phone")


def flash(page):
    return page.locator(".flash")


def slow_sandbox(sandbox_app, monkeypatch, seconds: float) -> None:
    """The sandbox decides pushes after `seconds` (for this test), so the console page is
    sure to show a pending push first."""
    sandbox = sandbox_app.extensions["lango.sandbox"]
    slower = replace(sandbox.config, SANDBOX_CALLBACK_DELAY_SECONDS=seconds)
    monkeypatch.setitem(sandbox_app.extensions, "lango.sandbox", replace(sandbox, config=slower))


# What each page said about the push as the server rendered it, before any script ran.
RECORD_RENDERED_STATUS = """
document.addEventListener("DOMContentLoaded", () => {
  const node = document.querySelector("[data-stream] [data-field=status]");
  window.__renderedStatus = node ? node.textContent.trim() : null;
});
"""


def test_new_business_signs_up_creates_a_key_and_watches_a_test_push_succeed(
    visit, sandbox_app, monkeypatch
):
    page = visit.page
    slow_sandbox(sandbox_app, monkeypatch, 3.0)
    page.add_init_script(RECORD_RENDERED_STATUS)
    email = f"founder-{secrets.token_hex(4)}@example.co.ke"

    # Sign up on the site; the plan stays at the default, the free "sandbox".
    page.goto("/signup")
    page.locator("[name=business_name]").fill(unique("Mama Mboga"))
    page.locator("[name=email]").fill(email)
    page.locator("[name=password]").fill(PASSWORD)
    plan = page.locator("[name=plan]")
    if plan.count() and plan.first.get_attribute("type") != "radio":
        expect(plan.first).to_have_value("sandbox")
    elif plan.count():
        expect(page.locator("[name=plan][value=sandbox]")).to_be_checked()
    page.get_by_role("button", name="Create account").click()
    page.wait_for_url(re.compile(r"/dashboard/?(\?.*)?$"))
    expect(page.locator("body")).to_contain_text(email)

    # API keys: the secret is shown once, with a working copy button.
    page.goto("/dashboard/keys")
    page.locator("[name=name]").fill("Checkout server")
    page.get_by_role("button", name="Create key").click()
    shown = page.locator("[data-secret] [data-copy-source]")
    expect(shown).to_have_text(re.compile(r"^\s*sk_test_\S+\s*$"))
    secret = shown.inner_text().strip()
    page.locator("[data-secret] [data-copy]").click()
    expect(page.locator("[data-secret] [data-copy]")).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == secret
    answer = tenant_call(visit.origin, secret)
    assert answer.status_code == 200, answer.text
    assert answer.json()["livemode"] is False

    # Test console: the push resolves on the page, live, with no reload.
    page.goto("/dashboard/console")
    page.locator("[name=phone_number]").fill(MAGIC_SUCCESS)
    page.locator("[name=amount]").fill("1")
    with page.expect_navigation():
        page.get_by_role("button", name="Send test push").click()
    navigations = []
    page.on("framenavigated", lambda frame: navigations.append(frame.url))
    assert page.evaluate("window.__renderedStatus") == "pending"
    status = page.locator("[data-stream] [data-field=status]").first
    expect(status).to_have_text("succeeded", timeout=STREAM_TIMEOUT_MS)
    # The same document turned it: the page neither reloaded nor went anywhere.
    assert page.evaluate("window.__renderedStatus") == "pending"
    assert not navigations, f"the page navigated: {navigations}"
    expect(status).to_have_attribute("data-status", "succeeded")
    receipt = page.locator("[data-stream] [data-field=mpesa_receipt_number]").first
    expect(receipt).to_have_text(re.compile(r"^\s*[A-Z0-9]{10}\s*$"))
    visit.screenshot()

    # The dashboard on a phone: readable, no sideways scrolling of the page itself.
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto("/dashboard")
    visit.screenshot("-phone")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the dashboard is {width}px wide on a 390px phone screen"

    visit.assert_clean()


def test_admin_signs_in_with_totp_suspends_a_tenant_and_reinstates_it(visit, staff_factory):
    page = visit.page
    admin = staff_factory("admin")
    business = unique("Duka la Juma")
    tenant = sign_up_by_api(visit.origin, business)
    assert tenant_call(visit.origin, tenant["secret"]).status_code == 200

    staff_sign_in(visit, admin, "/admin/tenants")

    # Find the tenant, open it, suspend it with a reason (the confirm dialog is accepted).
    page.locator("[name=q]").fill(tenant["email"])
    page.locator("[name=q]").press("Enter")
    page.wait_for_load_state()
    expect(page.locator("main")).to_contain_text(business)
    page.locator(f'main a[href*="{tenant["id"]}"]').first.click()
    page.wait_for_url(f"**/{tenant['id']}*")
    page.locator("[name=reason]").fill("Chargebacks reported by the bank")
    page.get_by_role("button", name="Suspend tenant").click()
    expect(flash(page)).to_contain_text(re.compile("suspended", re.IGNORECASE))

    refused = tenant_call(visit.origin, tenant["secret"])
    assert refused.status_code == 403, refused.text
    assert refused.json()["error"]["code"] == "tenant_suspended"

    page.get_by_role("button", name="Reinstate tenant").click()
    expect(flash(page)).to_contain_text(re.compile("reinstated", re.IGNORECASE))
    assert tenant_call(visit.origin, tenant["secret"]).status_code == 200
    visit.screenshot()
    phone_screenshot(visit)
    visit.assert_clean()


def test_compliance_finds_a_suspension_in_the_audit_log_and_exports_it(visit, app, staff_factory):
    page = visit.page
    tenant = sign_up_by_api(visit.origin, unique("Kibanda Traders"))
    reason = f"KYC documents forged {secrets.token_hex(3)}"
    suspend(app, tenant["id"], reason, staff_factory("admin"))
    officer = staff_factory("compliance")

    staff_sign_in(visit, officer, "/compliance/audit")

    page.locator("select[name=action]").select_option("tenant.suspended")
    tenant_filter = page.locator("[name=tenant_id]")
    if tenant_filter.count():
        tenant_filter.fill(tenant["id"])
    page.get_by_role("button", name="Search").click()
    page.wait_for_load_state()
    row = page.locator("tr", has_text=tenant["id"]).filter(has_text="tenant.suspended").first
    expect(row).to_be_visible()
    expect(row).to_contain_text(reason)
    row.get_by_text(reason).scroll_into_view_if_needed()  # into the screenshot

    export = page.locator("a, button").filter(has_text="Export CSV").first
    with page.expect_download() as download_info:
        export.click()
    download = download_info.value
    assert download.suggested_filename.endswith(".csv"), download.suggested_filename
    text = download.path().read_text(encoding="utf-8-sig")
    rows = list(csv.reader(io.StringIO(text)))
    header, entries = rows[0], rows[1:]
    assert "action" in [column.strip().lower() for column in header], header
    matching = [entry for entry in entries if "tenant.suspended" in entry and tenant["id"] in entry]
    assert matching, f"no tenant.suspended row for {tenant['id']} in:\n{text[:2000]}"
    assert any(reason in ",".join(entry) for entry in matching), "the reason is not exported"
    visit.screenshot()
    phone_screenshot(visit)
    visit.assert_clean()


def suspend(app, tenant_id: str, reason: str, admin) -> None:
    """What the admin console's suspend does (staff/api.py): the suspension, then its audit
    entry with the staff member as the actor."""
    from compliance.audit import Actor, ActorType, AuditAction, record
    from core.extensions import db
    from staff.tenants import suspend_tenant

    with app.app_context():
        suspend_tenant(tenant_id, reason=reason, staff_id=admin.id)
        record(
            AuditAction.TENANT_SUSPENDED,
            target_type="tenant",
            target_id=tenant_id,
            tenant_id=tenant_id,
            diff={"after": {"reason": reason}},
            actor=Actor(ActorType.STAFF, admin.id, admin.email),
        )
        db.session.commit()
        db.session.remove()


def test_the_network_watcher_tells_the_apps_origin_from_other_hosts():
    from tests.browser import Visit

    watched = Visit(page=None, origin="http://127.0.0.1:5000", name="watcher")
    watched.requests = [
        "http://127.0.0.1:5000/dashboard",
        "http://127.0.0.1:5000/assets/lango.css",
        "data:image/svg+xml,<svg/>",
        "http://127.0.0.1:5001/elsewhere",
        "https://fonts.googleapis.com/css",
        "http://localhost:5000/dashboard",
    ]
    assert watched.foreign_requests() == [
        "http://127.0.0.1:5001/elsewhere",
        "https://fonts.googleapis.com/css",
        "http://localhost:5000/dashboard",
    ]
