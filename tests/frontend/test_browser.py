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
from datetime import timedelta

import pyotp
import pytest
import requests

from tests.accounts import STAFF_PASSWORD
from tests.browser import output_dir

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


# --- every page at a phone's and a laptop's width ------------------------------------------

# (name, width, height): the screens the pages are drawn for.
SCREENS = [("phone", 390, 844), ("laptop", 1366, 900)]
PAGE_BLUEPRINTS = {"site", "staff_pages", "dashboard", "admin", "compliance"}
# Routes that answer with no page to look at: assets, downloads and event streams.
NOT_PAGES = {
    "site.static",
    "dashboard.payments_export",
    "dashboard.payment_stream",
    "dashboard.billing_invoice_payment",
    "compliance.audit_export",
    "compliance.kyc_document",
}
# Pages seen by nobody signed in (the dashboard and consoles send such visitors to sign in).
ANONYMOUS_PAGES = {"site", "staff_pages"}
# The page's excess width, and each table's: how much wider than its box, whether the box
# scrolls sideways by design, and which of its key columns (the first, Status, Amount) start
# out of sight.
FIND_OVERFLOW = """
() => {
  const view = window.innerWidth;
  const tables = [...document.querySelectorAll("table")].map((table) => {
    const box = table.parentElement;
    const overflowX = getComputedStyle(box).overflowX;
    const visible = box.getBoundingClientRect();
    const headers = [...table.querySelectorAll("thead th")];
    const hidden = headers
      .filter((th, index) => index === 0 || /^(status|amount)$/i.test(th.textContent.trim()))
      .filter((th) => th.getBoundingClientRect().right > visible.right + 1)
      .map((th) => th.textContent.trim());
    return {
      headers: headers.map((th) => th.textContent.trim()).join(" | "),
      wider: table.scrollWidth - box.clientWidth,
      scrolls: overflowX === "auto" || overflowX === "scroll",
      hidden,
    };
  });
  return {page: document.documentElement.scrollWidth - view, tables};
}
"""


def overflow_problems(page, screen: str) -> list[str]:
    """What does not fit: the page wider than the screen (at any width); on a laptop, a table
    wider than its box; on a phone, a table wider than a box that does not scroll sideways,
    or one whose first, Status or Amount column starts out of sight."""
    found = page.evaluate(FIND_OVERFLOW)
    problems = []
    if found["page"] > 0:
        problems.append(f"the page is {found['page']}px wider than the screen")
    for table in found["tables"]:
        if table["wider"] <= 1:
            continue
        if screen == "laptop" or not table["scrolls"]:
            problems.append(f"a table is {table['wider']}px wider than its box: {table['headers']}")
        elif table["hidden"]:
            problems.append(f"columns out of sight: {table['hidden']} of {table['headers']}")
    return problems


# Words of the plans' terms that the browser broke across lines ("10,00/0", "includ/ed").
FIND_BROKEN_WORDS = r"""
() => [...document.querySelectorAll(".plan dd, .plan .price")].flatMap((node) => {
  const broken = [];
  const walker = document.createTreeWalker(node, NodeFilter.SHOW_TEXT);
  let textNode;
  while ((textNode = walker.nextNode())) {
    for (const match of textNode.textContent.matchAll(/\S+/g)) {
      const range = document.createRange();
      range.setStart(textNode, match.index);
      range.setEnd(textNode, match.index + match[0].length);
      const lines = new Set([...range.getClientRects()].map((rect) => Math.round(rect.top)));
      if (lines.size > 1) broken.push(match[0]);
    }
  }
  return broken;
})
"""


def broken_words(page) -> list[str]:
    return page.evaluate(FIND_BROKEN_WORDS)


def populated_tenant(app, sign_in, tmp_path, origin: str) -> dict:
    """An owner's tenant with what every dashboard page lists: payments on several days of
    the period (one through the sandbox, with its events), an invoice, a webhook endpoint, a
    KYC submission, a review case, an invitation and the audit entries all that leaves.
    Returns the owner (Signed) and the ids the pages' URLs take."""
    from sqlalchemy import select

    from billing.models import Subscription, UsageRecord
    from compliance.fraud import FraudRule
    from core.events import Event
    from core.extensions import db
    from core.ids import new_id
    from core.tenancy import tenant_scope
    from tenants.members import invite_member
    from tenants.models import Member
    from tests.billing.test_invoices import open_invoice
    from tests.billing.test_periods import bill_on
    from tests.frontend.test_compliance_console import open_case, submit_kyc
    from tests.frontend.test_dashboard_webhooks import created_endpoint
    from tests.payments.test_reports import insert_push

    owner = sign_in("owner")
    tenant = owner.tenant
    with app.app_context():
        subscription = db.session.query(Subscription).filter_by(tenant_id=tenant.id).one()
        period_start = subscription.current_period_start
        db.session.remove()
    invoice_id = open_invoice(app, tenant.id)  # closes an old period; then ten days into one
    period_start -= timedelta(days=10)
    bill_on(app, tenant.id, "starter", start=period_start)

    insert_push(app, tenant.id, phone="254712345678", amount=12_500)
    insert_push(
        app, tenant.id, status="failed", amount=300, result_description="Request cancelled by user"
    )
    insert_push(app, tenant.id, status="pending", amount=150_000)
    with app.app_context(), tenant_scope(tenant.id):  # counted pushes on the period's days
        for day, count in ((0, 3), (1, 7), (2, 2), (5, 4), (9, 1)):
            for _ in range(count):
                db.session.add(
                    UsageRecord(
                        id=new_id("usage"),
                        stk_push_id=new_id("stk"),
                        livemode=False,
                        period_start=period_start,
                        created_at=period_start + timedelta(days=day, hours=1),
                    )
                )
        db.session.commit()
        db.session.remove()
    endpoint_id, _secret = created_endpoint(owner.client, url="https://hooks.example.com/orders")
    app.config["KYC_STORAGE_DIR"] = str(tmp_path / "kyc")
    submission_id, _document = submit_kyc(owner.client, tenant)
    case_id = open_case(app, tenant.id, "254722000111")
    with app.app_context():
        member = db.session.get(Member, owner.member_id)
        _invite, invite_token = invite_member(tenant.id, "cashier@example.co.ke", "viewer", member)
        db.session.commit()
        db.session.remove()
    # A push through the sandbox leaves events (and their webhook deliveries).
    pushed = requests.post(
        f"{origin}/v1/stk-pushes",
        json={
            "phone_number": MAGIC_SUCCESS,
            "amount": 250,
            "account_reference": "ORDER-1042",
            "metadata": {"order": "ORDER-1042", "cart": "x" * 120},
        },
        headers={"Authorization": f"Bearer {tenant.secret}"},
        timeout=60,
    )
    assert pushed.status_code in (200, 201, 202), pushed.text
    push_id = pushed.json()["id"]  # its page shows Daraja's callback, a wide block
    wait_for_push(origin, tenant.secret, push_id, "succeeded")
    with app.app_context(), tenant_scope(tenant.id):
        event_id = db.session.scalar(select(Event.id).order_by(Event.id.desc()).limit(1))
        db.session.remove()
    with app.app_context():
        rule_id = db.session.scalar(select(FraudRule.id).order_by(FraudRule.id).limit(1))
        db.session.remove()
    return {
        "owner": owner,
        "ids": {
            "push_id": push_id,
            "invoice_id": invoice_id,
            "endpoint_id": endpoint_id,
            "event_id": event_id,
            "submission_id": submission_id,
            "case_id": case_id,
            "token": invite_token,
            "tenant_id": tenant.id,
            "code": "starter",
            "rule_id": rule_id,
        },
    }


def wait_for_push(origin: str, secret: str, push_id: str, status: str) -> None:
    deadline = time.monotonic() + STREAM_TIMEOUT_MS / 1000
    while time.monotonic() < deadline:
        answer = requests.get(
            f"{origin}/v1/stk-pushes/{push_id}",
            headers={"Authorization": f"Bearer {secret}"},
            timeout=30,
        )
        if answer.json().get("status") == status:
            return
        time.sleep(0.2)
    raise AssertionError(f"push {push_id} not {status}: {answer.text}")


def page_paths(app, ids: dict[str, str]) -> dict[str, list[tuple[str, str]]]:
    """Every page of the app's URL map, with its ids filled in, grouped by who opens it:
    "anonymous" (the site and staff sign-in), "owner" (the dashboard), "staff" (both
    consoles). A route whose parameter has no id here fails the test, so a new page cannot
    be left unmeasured."""
    paths: dict[str, list[tuple[str, str]]] = {
        "anonymous": [("docs", "/docs")],
        "owner": [],
        "staff": [],
    }
    for rule in sorted(app.url_map.iter_rules(), key=lambda rule: rule.rule):
        blueprint = rule.endpoint.split(".", 1)[0]
        if blueprint not in PAGE_BLUEPRINTS or rule.endpoint in NOT_PAGES:
            continue
        if "GET" not in rule.methods:
            continue
        missing = rule.arguments - ids.keys()
        assert not missing, f"no id for {sorted(missing)} of {rule.rule}: add one"
        page = (rule.endpoint, rule.build({name: ids[name] for name in rule.arguments})[1])
        if blueprint in ANONYMOUS_PAGES:
            paths["anonymous"].append(page)
        elif blueprint == "dashboard":
            paths["owner"].append(page)
        else:
            paths["staff"].append(page)
    return paths


def test_every_page_fits_a_phone_and_a_laptop_screen(
    chromium, live_platform, app, sign_in, staff_factory, clock, tmp_path
):
    """Each page of the site, the dashboard (an owner's populated tenant) and both consoles
    (staff holding both roles), at 390x844 and 1366x900: screenshots in
    test-output/browser/pages-<screen>/, and no page wider than the screen."""
    from tests.frontend.conftest import staff_sign_in as sign_in_staff

    origin = live_platform.url
    kyc_dir = app.config.get("KYC_STORAGE_DIR")
    try:
        tenant = populated_tenant(app, sign_in, tmp_path, origin)
    finally:
        app.config["KYC_STORAGE_DIR"] = kyc_dir
    staff_client = app.test_client()
    sign_in_staff(staff_client, staff_factory("admin", "compliance"), clock)
    sessions = {
        "anonymous": None,
        "owner": tenant["owner"].client.get_cookie("session").value,
        "staff": staff_client.get_cookie("session").value,
    }
    paths = page_paths(app, tenant["ids"])

    problems, errors = [], []
    for screen, width, height in SCREENS:
        folder = output_dir() / f"pages-{screen}"
        folder.mkdir(exist_ok=True)
        for who, session in sessions.items():
            context = chromium.new_context(
                base_url=origin,
                viewport={"width": width, "height": height},
                locale="en-KE",
                timezone_id="Africa/Nairobi",
            )
            if session:
                context.add_cookies([{"name": "session", "value": session, "url": origin}])
            page = context.new_page()
            page.on("pageerror", lambda error: errors.append(f"uncaught: {error}"))
            for endpoint, path in paths[who]:
                response = page.goto(path)
                if response is None or response.status >= 400:
                    status = response.status if response else "no answer"
                    problems.append(f"{screen} {who} {path}: {status}")
                    continue
                page.wait_for_load_state("load")
                if endpoint == "docs":  # Swagger UI draws the operations after loading
                    page.wait_for_selector(".swagger-ui .opblock")
                page.screenshot(path=str(folder / f"{endpoint}.png"), full_page=True)
                found = overflow_problems(page, screen)
                if endpoint == "site.pricing":
                    found += [f"a word broken in two: {word}" for word in broken_words(page)]
                problems += [f"{screen} {path}: {problem}" for problem in found]
            context.close()
    assert not problems, "\n".join(problems)
    assert not errors, errors
