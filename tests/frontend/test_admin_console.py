"""The admin console's pages: tenants (search, detail, suspend and reinstate), plans, queues
and workers, staff accounts. Only staff with the admin role, after password and TOTP."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import select

from compliance.audit import AuditEntry
from core.events import EventType, record_event, subscribers
from core.unit_of_work import tenant_unit_of_work, unit_of_work
from tests.accounts import STAFF_PASSWORD, StaffAccount
from tests.conftest import ApiClient
from tests.frontend.conftest import ADMIN_PAGE, HTML, add_member, post_form, staff_sign_in

ACCESS = [
    ("/admin", {**ADMIN_PAGE, "admin": 302}),
    ("/admin/tenants", ADMIN_PAGE),
    ("/admin/plans", ADMIN_PAGE),
    ("/admin/plans/new", ADMIN_PAGE),
    ("/admin/queues", ADMIN_PAGE),
    ("/admin/staff", ADMIN_PAGE),
    ("/admin/staff/new", ADMIN_PAGE),
]

RECOVERY_CODE = re.compile(r"\b[a-z2-9]{4}-[a-z2-9]{4}-[a-z2-9]{4}-[a-z2-9]{4}\b")


def test_access(check_access):
    check_access(ACCESS)


@pytest.fixture
def admin(sign_in):
    return sign_in("admin").client


def page(client, path: str, status: int = 200, **kwargs) -> str:
    response = client.get(path, headers=HTML, **kwargs)
    assert response.status_code == status, response.get_data(as_text=True)[:800]
    return response.get_data(as_text=True)


def audit_entries(app, action: str, target_id: str) -> list[AuditEntry]:
    from core.extensions import db

    with app.app_context():
        entries = db.session.scalars(
            select(AuditEntry)
            .where(AuditEntry.action == action, AuditEntry.target_id == target_id)
            .order_by(AuditEntry.seq)
        ).all()
        db.session.expunge_all()
        db.session.remove()
    return entries


# --- tenants ----------------------------------------------------------------------------------


def test_admin_home_goes_to_the_tenants(admin):
    response = admin.get("/admin", headers=HTML)
    assert response.status_code == 302
    assert response.headers["Location"] == "/admin/tenants"


def test_tenants_are_found_by_name_id_email_fragment_and_status(app, admin, tenant_factory):
    mama = tenant_factory("Mama Mboga Supplies")
    duka = tenant_factory("Duka la Juma")
    add_member(app, duka.id, "developer", email="wanjiru.dev@juma-duka.co.ke")

    everyone = page(admin, "/admin/tenants")
    assert "Mama Mboga Supplies" in everyone and "Duka la Juma" in everyone

    by_email = page(admin, "/admin/tenants", query_string={"q": "WANJIRU.DEV@juma"})
    assert "Duka la Juma" in by_email and "Mama Mboga" not in by_email
    by_name = page(admin, "/admin/tenants", query_string={"q": "mboga"})
    assert "Mama Mboga Supplies" in by_name and "Duka la Juma" not in by_name
    by_id = page(admin, "/admin/tenants", query_string={"q": mama.id})
    assert "Mama Mboga Supplies" in by_id and "Duka la Juma" not in by_id
    wildcard = page(admin, "/admin/tenants", query_string={"q": "%"})
    assert "No tenants match" in wildcard

    post_form(admin, f"/admin/tenants/{duka.id}/suspend", {"reason": "Chargebacks"})
    suspended = page(admin, "/admin/tenants", query_string={"status": "suspended"})
    assert "Duka la Juma" in suspended and "Mama Mboga" not in suspended
    active = page(admin, "/admin/tenants", query_string={"status": "active", "plan": "sandbox"})
    assert "Mama Mboga Supplies" in active and "Duka la Juma" not in active
    page(admin, "/admin/tenants", 400, query_string={"status": "sleeping"})


def test_tenants_page_through_with_cursors(app, admin, tenant_factory, monkeypatch):
    monkeypatch.setattr("frontend.admin.TENANTS_PER_PAGE", 2)
    names = ["Alpha Ltd", "Beta Ltd", "Gamma Ltd"]
    for name in names:
        tenant_factory(name)

    first = page(admin, "/admin/tenants")
    assert "Gamma Ltd" in first and "Beta Ltd" in first and "Alpha Ltd" not in first
    older = re.search(r'href="([^"]*starting_after=[^"]+)"', first).group(1)
    second = page(admin, older.replace("&amp;", "&"))
    assert "Alpha Ltd" in second and "Gamma Ltd" not in second


def test_tenant_detail_shows_key_prefixes_members_and_usage_never_a_secret(
    app, admin, tenant_factory
):
    from billing.quota import reserve
    from core.extensions import db
    from core.tenancy import tenant_scope
    from tenants.models import ApiKey
    from tenants.service import create_api_key, revoke_api_key

    tenant = tenant_factory("Kibanda Foods")
    add_member(app, tenant.id, "viewer", email="akinyi.viewer@kibanda.co.ke")
    with app.app_context():
        with unit_of_work():
            extra = create_api_key(tenant.id, livemode=False, name="Old integration")
            revoke_api_key(tenant.id, extra.key.id, livemode=False)
        with tenant_scope(tenant.id):
            for number in range(2):
                reserve(tenant.id, False, f"stk_counted{number}")
            db.session.commit()
        keys = {
            key.id: (key.prefix, key.last4, key.secret_hash)
            for key in db.session.scalars(select(ApiKey).where(ApiKey.tenant_id == tenant.id))
        }
        db.session.remove()

    body = page(admin, f"/admin/tenants/{tenant.id}")

    for prefix, last4, secret_hash in keys.values():
        assert f"{prefix}…{last4}" in body
        assert secret_hash not in body
    assert tenant.secret not in body and extra.secret not in body
    assert "revoked" in body and "Old integration" in body
    assert tenant.email in body and "akinyi.viewer@kibanda.co.ke" in body
    assert "No KYC submission" in body
    assert re.search(r"Test pushes</div>\s*<div class=\"value\">2<", body)
    assert "Suspend tenant" in body
    assert 'data-confirm="Suspend Kibanda Foods? Its API keys stop working at once."' in body
    page(admin, "/admin/tenants/ten_01nosuchtenant0000000000000", 404)


def test_suspending_through_the_page_stops_the_tenants_key_until_reinstated(
    app, sign_in, tenant_factory
):
    signed = sign_in("admin")
    admin = signed.client
    tenant = tenant_factory("Soko Fresh")
    api = ApiClient(app.test_client(), tenant.secret)
    assert api.get("/v1/tenant").status_code == 200

    response = post_form(
        admin, f"/admin/tenants/{tenant.id}/suspend", {"reason": "Fraud ring reported by KCB"}
    )

    assert response.status_code == 302
    assert response.headers["Location"] == f"/admin/tenants/{tenant.id}"
    detail = page(admin, f"/admin/tenants/{tenant.id}")
    assert "Soko Fresh suspended" in detail
    assert "Fraud ring reported by KCB" in detail and signed.staff.email in detail
    assert "Reinstate tenant" in detail and "Suspend tenant" not in detail
    refused = api.get("/v1/tenant")
    assert refused.status_code == 403
    assert refused.get_json()["error"]["code"] == "tenant_suspended"
    (entry,) = audit_entries(app, "tenant.suspended", tenant.id)
    assert entry.diff == {"after": {"reason": "Fraud ring reported by KCB"}}
    assert (entry.actor_type, entry.actor_id) == ("staff", signed.staff.id)

    response = post_form(admin, f"/admin/tenants/{tenant.id}/reinstate")

    assert response.status_code == 302
    assert "Soko Fresh reinstated" in page(admin, f"/admin/tenants/{tenant.id}")
    assert api.get("/v1/tenant").status_code == 200
    assert len(audit_entries(app, "tenant.reinstated", tenant.id)) == 1


def test_suspend_needs_a_reason_and_conflicts_are_flashed_not_errors(admin, tenant_factory):
    tenant = tenant_factory("Maziwa Dairy")
    path = f"/admin/tenants/{tenant.id}"

    missing = post_form(admin, f"{path}/suspend", {"reason": ""})
    assert missing.status_code == 400
    assert "Reason: Say why the tenant is suspended." in missing.get_data(as_text=True)
    assert "Suspend tenant" in page(admin, path)  # still active

    not_suspended = post_form(admin, f"{path}/reinstate")
    assert not_suspended.status_code == 409
    assert "This tenant is not suspended." in not_suspended.get_data(as_text=True)

    assert post_form(admin, f"{path}/suspend", {"reason": "KYC mismatch"}).status_code == 302
    twice = post_form(admin, f"{path}/suspend", {"reason": "again"})
    assert twice.status_code == 409
    assert "already suspended" in twice.get_data(as_text=True)
    unknown = post_form(admin, "/admin/tenants/ten_nope/suspend", {"reason": "fraud"})
    assert unknown.status_code == 404


def test_members_and_compliance_staff_cannot_suspend(sign_in, tenant_factory):
    tenant = tenant_factory("Jua Kali Works")
    for role in ("owner", "compliance"):
        client = sign_in(role, tenant=tenant if role == "owner" else None).client
        response = post_form(client, f"/admin/tenants/{tenant.id}/suspend", {"reason": "x" * 5})
        assert response.status_code == 403, role
    anonymous = sign_in("anonymous").client
    response = post_form(anonymous, f"/admin/tenants/{tenant.id}/suspend", {"reason": "x" * 5})
    assert response.status_code == 302


# --- plans ------------------------------------------------------------------------------------

PLAN_FORM = {
    "code": "pages_test",
    "name": "Pages test",
    "monthly_price": "2500",
    "included_pushes": "1000",
    "overage_price": "",
    "rate_limit": "20 per second",
    "max_webhook_endpoints": "3",
    "livemode_allowed": "y",
    "test_allowance": "500",
    "position": "90",
}


@pytest.fixture
def cleanup_plan(app):
    yield PLAN_FORM["code"]
    from billing.models import Plan
    from core.extensions import db

    with app.app_context():
        db.session.execute(db.delete(Plan).where(Plan.code == PLAN_FORM["code"]))
        db.session.commit()
        db.session.remove()


def test_admins_create_edit_and_retire_a_plan(app, admin, cleanup_plan):
    from billing.subscriptions import get_plan
    from core.errors import ValidationFailed
    from core.extensions import db

    assert "Plan Pages test (pages_test) created." not in page(admin, "/admin/plans")
    created = post_form(admin, "/admin/plans/new", PLAN_FORM)
    assert created.status_code == 302 and created.headers["Location"] == "/admin/plans"
    listing = page(admin, "/admin/plans")
    assert "Plan Pages test (pages_test) created." in listing
    assert "KES 2,500" in listing and "hard cap" in listing

    form = page(admin, "/admin/plans/pages_test")
    assert 'value="20 per second"' in form
    edited = post_form(
        admin, "/admin/plans/pages_test", {**PLAN_FORM, "name": "Pages", "overage_price": "3"}
    )
    assert edited.status_code == 302
    with app.app_context():
        plan = get_plan("pages_test")
        assert (plan.name, plan.overage_price, plan.code) == ("Pages", 3, "pages_test")
        db.session.remove()

    retired = post_form(admin, "/admin/plans/pages_test/retire")
    assert retired.status_code == 302
    assert "Plan Pages (pages_test) retired" in page(admin, "/admin/plans")
    with app.app_context():
        with pytest.raises(ValidationFailed):
            get_plan("pages_test")  # off sale
        db.session.remove()
    post_form(admin, "/admin/plans/pages_test/retire")
    assert "already retired" in page(admin, "/admin/plans")

    actions = [
        entry.action
        for action in ("plan.created", "plan.updated", "plan.retired")
        for entry in audit_entries(app, action, "pages_test")
    ]
    assert actions == ["plan.created", "plan.updated", "plan.retired"]
    page(admin, "/admin/plans/no_such_plan", 404)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"code": "Bad Code!"}, "Code: String does not match expected pattern."),
        (
            {"monthly_price": "-5"},
            "Monthly price (KES): Must be greater than or equal to 0 and less than or equal to "
            "9007199254740991.",
        ),
        ({"rate_limit": "lots"}, "is not a rate limit like"),
        ({"name": ""}, "Name: This field is required."),
    ],
)
def test_invalid_plans_are_refused_with_the_apis_rules(admin, cleanup_plan, change, message):
    response = post_form(admin, "/admin/plans/new", {**PLAN_FORM, **change})
    assert response.status_code == 400
    assert message in response.get_data(as_text=True)
    assert "pages_test" not in page(admin, "/admin/plans")


def test_an_existing_plan_code_is_a_form_error(admin):
    response = post_form(admin, "/admin/plans/new", {**PLAN_FORM, "code": "sandbox"})
    assert response.status_code == 400
    assert "A plan &#39;sandbox&#39; already exists." in response.get_data(as_text=True)


# --- queues and workers -----------------------------------------------------------------------


def queue_row(body: str, name: str) -> dict[str, str]:
    row = re.search(rf'<tr data-queue="{name}">(.*?)</tr>', body, re.S).group(1)
    return dict(re.findall(r'data-field="(\w+)">(?:<[^>]+>)?([\d,]+)', row))


def test_queues_page_counts_jobs_and_lists_workers_and_schedulers(app, admin):
    from rq import Queue, SimpleWorker
    from rq.cron import CronScheduler

    redis = app.extensions["lango.redis"]
    empty = page(admin, "/admin/queues")
    assert queue_row(empty, "default") == {
        "queued": "0",
        "started": "0",
        "scheduled": "0",
        "failed": "0",
    }
    assert "No workers running" in empty and "No scheduler running" in empty
    assert "every webhook delivery that is due has been sent" in empty

    queue = Queue("default", connection=redis)
    job = queue.enqueue("payments.jobs.reconcile_pending_pushes")
    worker = SimpleWorker([queue, Queue("billing", connection=redis)], connection=redis)
    worker.register_birth()
    cron = CronScheduler(connection=redis, name="pages-test-cron")
    cron.register(print, queue_name="default", interval=60)
    cron.register_birth()
    try:
        body = page(admin, "/admin/queues")
        assert queue_row(body, "default")["queued"] == "1"
        assert queue_row(body, "webhooks")["queued"] == "0"
        assert worker.name in body and "default, billing" in body
        assert "pages-test-cron" in body and "<code>print</code>" in body
        assert "EAT" in body
    finally:
        worker.register_death()
        cron.register_death()
        job.delete()
    assert worker.name not in page(admin, "/admin/queues")


def subscriber_row(body: str, name: str) -> dict[str, str]:
    row = re.search(rf'<tr data-subscriber="{re.escape(name)}">(.*?)</tr>', body, re.S).group(1)
    return dict(re.findall(r'data-field="(\w+)">(?:<[^>]+>)?([^<]+)', row))


def test_queues_page_shows_each_subscribers_lag(app, admin, tenant):
    with app.app_context():
        names = sorted(subscribers())
        owed = [n for n in names if subscribers()[n].wants(EventType.PAYMENT_SUCCEEDED)]
        with tenant_unit_of_work(tenant.id):
            event = record_event(EventType.PAYMENT_SUCCEEDED, {"object": {}}, livemode=False)
            event.created_at = datetime.now(UTC) - timedelta(minutes=3)
    assert owed

    body = page(admin, "/admin/queues")

    for name in names:
        row = subscriber_row(body, name)
        if name in owed:
            assert (row["pending"], row["retrying"]) == ("1", "0")
            assert 180 <= int(row["oldest"].removesuffix(" s").replace(",", "")) < 240
        else:
            assert row == {"pending": "0", "retrying": "0", "oldest": "nothing owed"}


# --- staff accounts ---------------------------------------------------------------------------


def test_creating_staff_shows_the_second_factor_once_and_they_can_sign_in(app, sign_in, clock):
    signed = sign_in("admin")
    admin = signed.client

    response = post_form(
        admin,
        "/admin/staff/new",
        {
            "email": "Achieng.Otieno@lango.example",
            "name": "Achieng Otieno",
            "roles": ["compliance"],
            "password": STAFF_PASSWORD,
        },
    )

    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    body = response.get_data(as_text=True)
    codes = RECOVERY_CODE.findall(body)
    assert len(set(codes)) == 10
    assert '<svg width="' in body and 'class="qr"' in body
    uri = re.search(r"otpauth://totp/[^<\"]+", body).group(0).replace("&amp;", "&")
    secret = parse_qs(urlsplit(uri).query)["secret"][0]
    with admin.session_transaction() as session:
        stored = repr(dict(session))
    assert secret not in stored and not any(code in stored for code in codes)

    listing = page(admin, "/admin/staff")
    assert "achieng.otieno@lango.example" in listing and "compliance" in listing
    assert secret not in listing and not any(code in listing for code in codes)
    (entry,) = audit_entries(app, "staff.created", _staff_id(app, "achieng.otieno@lango.example"))
    assert entry.actor_id == signed.staff.id
    assert entry.diff["after"] == {
        "email": "achieng.otieno@lango.example",
        "name": "Achieng Otieno",
        "roles": ["compliance"],
    }
    assert secret not in repr(entry.diff)

    newcomer = app.test_client()
    account = StaffAccount(
        _staff_id(app, "achieng.otieno@lango.example"), "achieng.otieno@lango.example", secret
    )
    staff_sign_in(newcomer, account, clock)
    assert newcomer.get("/admin/tenants", headers=HTML).status_code == 403  # compliance only
    # A recovery code signs in once instead of the authenticator.
    other = app.test_client()
    staff_sign_in(other, account, clock, second_factor=False)
    assert post_form(other, "/staff/login/totp", {"recovery_code": codes[0]}).status_code == 302


def _staff_id(app, email: str) -> str:
    from core.extensions import db
    from staff.models import StaffUser

    with app.app_context():
        staff_id = db.session.scalar(select(StaffUser.id).where(StaffUser.email == email))
        db.session.remove()
    return staff_id


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"password": "short"}, "Initial password: Field must be between 12 and 256"),
        ({"roles": []}, "Roles: Pick at least one role."),
        ({"roles": ["root"]}, "Roles: &#39;root&#39; is not a valid choice"),
        ({"email": "not-an-email"}, "Email: Invalid email address."),
    ],
)
def test_invalid_staff_accounts_are_form_errors(admin, change, message):
    form = {"email": "kamau@lango.example", "name": "Kamau", "roles": ["admin"]}
    response = post_form(admin, "/admin/staff/new", {**form, "password": STAFF_PASSWORD, **change})
    assert response.status_code == 400
    assert message in response.get_data(as_text=True)
    assert "kamau@lango.example" not in page(admin, "/admin/staff")


def test_a_taken_staff_email_is_a_form_error(sign_in):
    signed = sign_in("admin")
    response = post_form(
        signed.client,
        "/admin/staff/new",
        {
            "email": signed.staff.email,
            "name": "Twin",
            "roles": ["admin"],
            "password": STAFF_PASSWORD,
        },
    )
    assert response.status_code == 400
    assert "A staff user with this email already exists." in response.get_data(as_text=True)


def test_a_blank_reason_is_refused(admin, tenant_factory):
    tenant = tenant_factory("Nyama Choma Grill")
    response = post_form(admin, f"/admin/tenants/{tenant.id}/suspend", {"reason": "    "})
    assert response.status_code == 400
    assert "Suspend tenant" in page(admin, f"/admin/tenants/{tenant.id}")


def test_staff_with_both_roles_switch_consoles_from_the_top_bar(app, staff_factory, clock):
    both, admin_only = app.test_client(), app.test_client()
    staff_sign_in(both, staff_factory("admin", "compliance"), clock)
    staff_sign_in(admin_only, staff_factory("admin"), clock)

    tenants = page(both, "/admin/tenants")
    assert 'class="console-switch" href="/compliance/audit"' in tenants
    audit = both.get("/compliance/audit", headers=HTML).get_data(as_text=True)
    assert 'class="console-switch" href="/admin/tenants"' in audit
    assert "console-switch" not in page(admin_only, "/admin/tenants")
