"""The compliance console's pages: audit search, CSV export and chain check; the fraud review
queue; fraud rules with reorder and dry run; KYC review. Only staff with the compliance role,
after password and TOTP, get in."""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, text

from compliance import fraud
from compliance.audit import Actor, ActorType, AuditAction, AuditEntry, record
from core.extensions import db
from tests.compliance import test_fraud
from tests.compliance.test_rule_dry_run import insert_pushes
from tests.conftest import ApiClient
from tests.frontend.conftest import COMPLIANCE_PAGE, HTML, post_form

restore_rules = test_fraud.restore_rules

ACCESS = [
    ("/compliance", {**COMPLIANCE_PAGE, "compliance": 302}),
    ("/compliance/audit", COMPLIANCE_PAGE),
    ("/compliance/audit/export", COMPLIANCE_PAGE),
    ("/compliance/fraud/cases", COMPLIANCE_PAGE),
    ("/compliance/fraud/rules", COMPLIANCE_PAGE),
    ("/compliance/fraud/rules/new", COMPLIANCE_PAGE),
    ("/compliance/kyc", COMPLIANCE_PAGE),
]


def test_access(check_access):
    check_access(ACCESS)


def page(client, path: str, **query):
    response = client.get(path, query_string=query or None, headers=HTML)
    return response, response.get_data(as_text=True)


def follow(client, response):
    assert response.status_code == 302, response.get_data(as_text=True)[:800]
    return page(client, response.headers["Location"])


def rows(html: str, attribute: str) -> list[str]:
    return re.findall(rf'<tr {attribute}="([^"]+)"', html)


@pytest.fixture
def compliance(sign_in):
    return sign_in("compliance")


# --- audit log ------------------------------------------------------------------------------


def suspend(app, tenant_id: str, admin, reason: str = "Chargebacks") -> None:
    """An admin suspends a tenant the way the admin console does: the service, then (as
    staff.api does after it) the audit entry, unless the service already wrote one."""
    from staff.tenants import suspend_tenant

    with app.app_context():
        suspend_tenant(tenant_id, reason=reason, staff_id=admin.id)
        if not _entries(tenant_id, AuditAction.TENANT_SUSPENDED):
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


def _entries(tenant_id: str | None, action: AuditAction) -> list[AuditEntry]:
    statement = select(AuditEntry).where(AuditEntry.action == action.value)
    if tenant_id is not None:
        statement = statement.where(AuditEntry.tenant_id == tenant_id)
    return list(db.session.scalars(statement.order_by(AuditEntry.seq)))


def entry_ids(app, tenant_id: str | None, action: AuditAction) -> list[str]:
    with app.app_context():
        ids = [entry.id for entry in _entries(tenant_id, action)]
        db.session.remove()
    return ids


def test_audit_search_finds_a_suspension_by_action_and_tenant(
    app, compliance, tenant_factory, staff_factory
):
    suspended, other = tenant_factory("Suspended Duka"), tenant_factory("Other Duka")
    admin = staff_factory("admin")
    suspend(app, suspended.id, admin, reason="Chargebacks from many phones")
    suspend(app, other.id, admin)
    wanted = entry_ids(app, suspended.id, AuditAction.TENANT_SUSPENDED)

    response, html = page(
        compliance.client, "/compliance/audit", action="tenant.suspended", tenant_id=suspended.id
    )

    assert response.status_code == 200
    assert rows(html, "data-entry") == wanted[::-1] and wanted
    assert "Chargebacks from many phones" in html
    assert "Suspended Duka" in html and admin.email in html
    _, everyone = page(compliance.client, "/compliance/audit", action="tenant.suspended")
    assert set(re.findall(r'data-action="([^"]+)"', everyone)) == {"tenant.suspended"}
    assert {suspended.id, other.id} <= set(re.findall(r'data-tenant="([^"]+)"', everyone))
    _, by_actor = page(
        compliance.client, "/compliance/audit", actor_type="staff", actor_id=admin.id
    )
    assert len(rows(by_actor, "data-entry")) == 2


def test_audit_search_pages_with_a_cursor(app, compliance, tenant_factory):
    for _ in range(3):
        tenant_factory()
    from frontend.compliance import audit as views

    original, views.PAGE_SIZE = views.PAGE_SIZE, 2
    try:
        _, first = page(compliance.client, "/compliance/audit", action="tenant.signed_up")
        older = re.search(r'href="([^"]*starting_after=[^"]*)"', first).group(1)
        _, second = page(compliance.client, older.replace("&amp;", "&"))
    finally:
        views.PAGE_SIZE = original
    assert len(rows(first, "data-entry")) == 2 and len(rows(second, "data-entry")) == 1
    assert not set(rows(first, "data-entry")) & set(rows(second, "data-entry"))


class _FixedClock(datetime):
    moment: datetime

    @classmethod
    def now(cls, tz=None):
        return cls.moment


def record_at(app, monkeypatch, moment: datetime, tenant_id: str) -> str:
    """An audit entry that happened at `moment` (UTC)."""
    _FixedClock.moment = moment
    monkeypatch.setattr("compliance.audit.datetime", _FixedClock)
    with app.app_context():
        entry = record(
            AuditAction.TENANT_SUSPENDED,
            target_type="tenant",
            target_id=tenant_id,
            tenant_id=tenant_id,
            diff={"after": {"reason": "late"}},
        )
        entry_id = entry.id
        db.session.commit()
        db.session.remove()
    monkeypatch.undo()
    return entry_id


def test_audit_dates_are_east_africa_days(app, monkeypatch, compliance, tenant):
    # 21:30 UTC on 10 March is 00:30 on 11 March in Nairobi.
    late = record_at(app, monkeypatch, datetime(2026, 3, 10, 21, 30, tzinfo=UTC), tenant.id)
    early = record_at(app, monkeypatch, datetime(2026, 3, 10, 20, 30, tzinfo=UTC), tenant.id)

    def found(**dates):
        _, html = page(compliance.client, "/compliance/audit", tenant_id=tenant.id, **dates)
        return set(rows(html, "data-entry"))

    assert found(occurred_gte="2026-03-11", occurred_lte="2026-03-11") == {late}
    assert found(occurred_gte="2026-03-10", occurred_lte="2026-03-10") == {early}
    assert found(occurred_lte="2026-03-10") == {early}
    assert found(occurred_gte="2026-03-10", occurred_lte="2026-03-11") == {early, late}
    _, html = page(
        compliance.client, "/compliance/audit", tenant_id=tenant.id, occurred_gte="2026-03-11"
    )
    assert "11 Mar 2026, 00:30 EAT" in html


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"occurred_gte": "10/03/2026"}, "Not a valid date value"),
        ({"action": "tenant.exploded"}, "Not a valid choice"),
        ({"actor_type": "robot"}, "Not a valid choice"),
        ({"occurred_gte": "2026-03-11", "occurred_lte": "2026-03-10"}, "before the start date"),
    ],
)
def test_bad_audit_filters_are_field_errors(compliance, query, message):
    response, html = page(compliance.client, "/compliance/audit", **query)
    assert response.status_code == 400
    assert message in html and 'class="error"' in html
    export = compliance.client.get("/compliance/audit/export", query_string=query, headers=HTML)
    assert export.status_code == 400


def test_csv_export_has_the_header_and_the_matching_rows_only(
    app, compliance, tenant_factory, staff_factory
):
    suspended, other = tenant_factory("Suspended Duka"), tenant_factory("Other Duka")
    admin = staff_factory("admin")
    suspend(app, suspended.id, admin)
    suspend(app, other.id, admin)
    wanted = entry_ids(app, suspended.id, AuditAction.TENANT_SUSPENDED)
    _, html = page(
        compliance.client, "/compliance/audit", action="tenant.suspended", tenant_id=suspended.id
    )
    link = re.search(r'<a class="btn btn-secondary" href="([^"]+)">Export CSV</a>', html)

    response = compliance.client.get(link.group(1).replace("&amp;", "&"), headers=HTML)

    assert response.status_code == 200
    assert response.mimetype == "text/csv"
    assert response.headers["Content-Disposition"].startswith("attachment")
    lines = list(csv.reader(io.StringIO(response.get_data(as_text=True))))
    assert lines[0][:3] == ["seq", "id", "occurred_at"]
    exported = [dict(zip(lines[0], line, strict=True)) for line in lines[1:]]
    assert [row["id"] for row in exported] == wanted
    assert {(row["action"], row["tenant_id"]) for row in exported} == {
        ("tenant.suspended", suspended.id)
    }


def test_verify_chain_reports_ok_then_the_tampered_entry(app, compliance, tenant_factory):
    for _ in range(3):
        tenant_factory()

    _, html = follow(compliance.client, post_form(compliance.client, "/compliance/audit/verify"))

    assert 'data-chain="ok"' in html and "The audit chain is intact" in html
    with app.app_context():
        victim = db.session.scalars(select(AuditEntry).order_by(AuditEntry.seq)).all()[1]
        victim_seq, victim_id = victim.seq, victim.id
        db.session.remove()
    tamper(app, "UPDATE public.audit_log SET target_id = 'forged' WHERE id = :id", id=victim_id)

    _, html = follow(compliance.client, post_form(compliance.client, "/compliance/audit/verify"))

    assert 'data-chain="broken"' in html
    assert f"broken at seq {victim_seq}" in html and victim_id in html and "edited" in html


def tamper(app, *statements: str, **params) -> None:
    """What a superuser could do: switch the trigger off, change rows, switch it back."""
    with app.app_context(), db.engine.begin() as connection:
        connection.exec_driver_sql("ALTER TABLE public.audit_log DISABLE TRIGGER USER")
        for sql in statements:
            connection.execute(text(sql), params)
        connection.exec_driver_sql("ALTER TABLE public.audit_log ENABLE TRIGGER USER")


# --- fraud review queue ---------------------------------------------------------------------


def open_case(app, tenant_id: str, phone: str, amount: int = 75000) -> str:
    (push_id,) = insert_pushes(
        app,
        tenant_id,
        {"phone": phone, "amount": amount, "created_at": datetime.now(UTC), "status": "pending"},
    )
    with app.app_context():
        case = fraud.open_review_case(tenant_id, push_id, "frule_new_tenant_large_amount")
        case_id = case.id
        db.session.commit()
        db.session.remove()
    return case_id


def test_a_case_is_assigned_noted_revealed_and_resolved(app, compliance, tenant, staff_factory):
    phone = test_fraud.random_phone()
    case_id = open_case(app, tenant.id, phone)
    colleague = staff_factory("compliance")
    client = compliance.client

    _, queue = page(client, "/compliance/fraud/cases")
    assert rows(queue, "data-case") == [case_id]
    assert phone not in queue and phone[-2:] in queue and "KES 75,000" in queue
    assert "Unassigned" in queue

    assign = post_form(
        client, f"/compliance/fraud/cases/{case_id}/assign", {"staff_id": colleague.id}
    )
    _, detail = follow(client, assign)
    assert f"Case assigned to {colleague.email}" in detail
    _, queue = page(client, "/compliance/fraud/cases")
    assert colleague.email in queue

    noted = post_form(
        client, f"/compliance/fraud/cases/{case_id}/note", {"note": "Called the shop"}
    )
    _, detail = follow(client, noted)
    assert f"{compliance.staff.email}: Called the shop" in detail
    empty = post_form(client, f"/compliance/fraud/cases/{case_id}/note", {"note": " "})
    assert empty.status_code == 400

    revealed = post_form(client, f"/compliance/fraud/cases/{case_id}/reveal")
    assert revealed.status_code == 200 and phone in revealed.get_data(as_text=True)
    assert entry_ids(app, tenant.id, AuditAction.PHONE_REVEALED)
    assert phone not in page(client, f"/compliance/fraud/cases/{case_id}")[1]

    resolved = post_form(
        client,
        f"/compliance/fraud/cases/{case_id}/resolve",
        {"resolution": "fraudulent", "note": "SIM swap", "block_phone": "y", "suspend_tenant": "y"},
    )
    _, detail = follow(client, resolved)
    assert "Case resolved as fraudulent" in detail and "The tenant is suspended" in detail
    with app.app_context():
        decision = fraud.screen(tenant.id, fraud.ScreenedPush(phone, 10, False))
        status = db.session.execute(
            text("SELECT status FROM public.tenants WHERE id = :id"), {"id": tenant.id}
        ).scalar()
        db.session.remove()
    assert decision.blocklisted and status == "suspended"
    assert entry_ids(app, tenant.id, AuditAction.FRAUD_CASE_ASSIGNED)
    assert entry_ids(app, tenant.id, AuditAction.FRAUD_CASE_RESOLVED)

    again = post_form(
        client, f"/compliance/fraud/cases/{case_id}/resolve", {"resolution": "legitimate"}
    )
    assert again.status_code == 409 and "already resolved" in again.get_data(as_text=True)
    assert rows(page(client, "/compliance/fraud/cases")[1], "data-case") == []
    assert rows(page(client, "/compliance/fraud/cases", status="fraudulent")[1], "data-case") == [
        case_id
    ]


def test_a_legitimate_case_cannot_block_and_unknown_cases_are_404(app, compliance, tenant):
    case_id = open_case(app, tenant.id, test_fraud.random_phone())
    client = compliance.client

    refused = post_form(
        client,
        f"/compliance/fraud/cases/{case_id}/resolve",
        {"resolution": "legitimate", "block_phone": "y"},
    )
    assert refused.status_code == 400
    assert "Only a fraudulent case can block the phone" in refused.get_data(as_text=True)
    ok = post_form(
        client, f"/compliance/fraud/cases/{case_id}/resolve", {"resolution": "legitimate"}
    )
    assert "Case resolved as legitimate" in follow(client, ok)[1]
    assert page(client, "/compliance/fraud/cases/frc_missing")[0].status_code == 404
    assert post_form(client, "/compliance/fraud/cases/frc_missing/reveal").status_code == 404
    assert page(client, "/compliance/fraud/cases", status="nope")[0].status_code == 400


def test_case_pages_refuse_other_staff(app, sign_in, tenant):
    case_id = open_case(app, tenant.id, test_fraud.random_phone())
    admin = sign_in("admin")
    assert page(admin.client, f"/compliance/fraud/cases/{case_id}")[0].status_code == 403
    owner = sign_in("owner", tenant=tenant)
    assert page(owner.client, f"/compliance/fraud/cases/{case_id}")[0].status_code == 403


# --- fraud rules ----------------------------------------------------------------------------


def rule_order(app) -> list[tuple[str, int]]:
    from compliance import console

    with app.app_context():
        order = [(rule.id, rule.position) for rule in console.list_rules()]
        db.session.remove()
    return order


def create(client, expression: str, outcome: str = "review", **extra):
    data = {"expression": expression, "outcome": outcome, "description": "", **extra}
    data.setdefault("position", "100")
    return post_form(client, "/compliance/fraud/rules/new", data)


def test_a_rule_with_a_syntax_error_is_a_field_error(app, compliance, restore_rules):
    before = rule_order(app)

    response = create(compliance.client, "amount >")

    assert response.status_code == 400
    html = response.get_data(as_text=True)
    assert 'class="field has-error"' in html and "Expression: syntax error" in html
    unknown = create(compliance.client, "no_such_attribute > 1")
    assert "unknown symbol" in unknown.get_data(as_text=True)
    assert rule_order(app) == before


def test_rules_are_created_edited_toggled_and_reordered(app, compliance, restore_rules):
    client = compliance.client
    _, form = page(client, "/compliance/fraud/rules/new")
    assert 'value="40"' in form  # after the seeded 10, 20, 30

    _, listing = follow(client, create(client, "amount == 4321", "block", position="40"))
    assert "amount == 4321" in listing and "it applies to the next push" in listing
    rule_id = rule_order(app)[-1][0]
    assert rule_order(app)[-1] == (rule_id, 40)

    moved = post_form(client, f"/compliance/fraud/rules/{rule_id}/move", {"direction": "up"})
    assert "moved up" in follow(client, moved)[1]
    order = rule_order(app)
    assert [rule for rule, _ in order].index(rule_id) == 2
    assert [position for _, position in order] == [10, 20, 30, 40]
    post_form(client, f"/compliance/fraud/rules/{order[0][0]}/move", {"direction": "up"})
    assert rule_order(app) == order  # the first rule stays first
    with app.app_context():
        changed = {e.target_id for e in _entries(None, AuditAction.FRAUD_RULE_CHANGED)}
        db.session.remove()
    assert {rule_id, "frule_phone_cancellations_1h"} <= changed

    disabled = post_form(client, f"/compliance/fraud/rules/{rule_id}/enabled", {"enabled": "0"})
    assert f"Rule {rule_id} disabled" in follow(client, disabled)[1]
    edited = post_form(
        client,
        f"/compliance/fraud/rules/{rule_id}",
        {"expression": "amount == 4322", "outcome": "review", "position": "30", "enabled": "y"},
    )
    assert f"Rule {rule_id} saved" in follow(client, edited)[1]
    with app.app_context():
        rule = db.session.get(fraud.FraudRule, rule_id)
        assert (rule.expression, rule.outcome, rule.enabled) == ("amount == 4322", "review", True)
        db.session.remove()
    bad = post_form(
        client,
        f"/compliance/fraud/rules/{rule_id}",
        {"expression": "amount >>", "outcome": "review", "position": "30"},
    )
    assert bad.status_code == 400 and "syntax error" in bad.get_data(as_text=True)
    assert page(client, "/compliance/fraud/rules/frule_missing")[0].status_code == 404


def test_a_dry_run_shows_what_the_rule_would_match_without_saving(
    app, compliance, tenant_factory, restore_rules
):
    a, b = tenant_factory("Duka A"), tenant_factory("Duka B")
    now = datetime.now(UTC)
    insert_pushes(
        app,
        a.id,
        {"phone": "254700000001", "amount": 90000, "created_at": now - timedelta(days=1)},
        {"phone": "254700000002", "amount": 100, "created_at": now - timedelta(days=2)},
        {"phone": "254700000003", "amount": 95000, "created_at": now - timedelta(days=9)},
    )
    insert_pushes(
        app,
        b.id,
        {"phone": "254700000004", "amount": 85000, "created_at": now - timedelta(hours=2)},
    )
    before = rule_order(app)

    response = create(compliance.client, "amount > 50000", "block", dry_run="1")

    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert re.search(r"data-dry-run-matched>2<", html) and re.search(
        r"data-dry-run-pushes>3<", html
    )
    assert "Duka A" in html and "Duka B" in html and "2547******04" in html
    assert "254700000004" not in html
    assert rule_order(app) == before  # nothing saved
    invalid = create(compliance.client, "amount >", dry_run="1")
    assert invalid.status_code == 400 and "syntax error" in invalid.get_data(as_text=True)
    edit = post_form(
        compliance.client,
        "/compliance/fraud/rules/frule_phone_velocity_10m",
        {"expression": "amount < 1000", "outcome": "block", "position": "10", "dry_run": "1"},
    )
    assert re.search(r"data-dry-run-matched>1<", edit.get_data(as_text=True))
    assert rule_order(app) == before


# --- KYC review -----------------------------------------------------------------------------

KYC_DETAILS = {
    "legal_name": "Duka Traders Limited",
    "registration_number": "PVT-AAA1234",
    "kra_pin": "P051234567X",
    "director_name": "Achieng Otieno",
    "director_id_number": "12345678",
    "contact_email": "compliance@duka.example",
    "contact_phone": "254712345678",
}
CERTIFICATE = b"%PDF-1.4 certificate of incorporation"


@pytest.fixture
def kyc_storage(app, tmp_path):
    original = app.config.get("KYC_STORAGE_DIR")
    app.config["KYC_STORAGE_DIR"] = str(tmp_path / "kyc")
    yield tmp_path / "kyc"
    app.config["KYC_STORAGE_DIR"] = original


def submit_kyc(client, tenant) -> tuple[str, str]:
    api = ApiClient(client, tenant.secret)
    submission = api.post("/v1/compliance/kyc", json=KYC_DETAILS).get_json()["id"]
    document = api.post(
        "/v1/compliance/kyc/documents",
        data={"file": (io.BytesIO(CERTIFICATE), "certificate.pdf", "application/pdf")},
        content_type="multipart/form-data",
    ).get_json()["id"]
    return submission, document


def live_enabled(app, tenant_id: str) -> bool:
    with app.app_context():
        value = db.session.execute(
            text("SELECT live_enabled FROM public.tenants WHERE id = :id"), {"id": tenant_id}
        ).scalar()
        db.session.remove()
    return value


def test_kyc_is_reviewed_and_approved(app, client, compliance, tenant, kyc_storage):
    submission, document = submit_kyc(client, tenant)
    staff = compliance.client

    _, queue = page(staff, "/compliance/kyc")
    assert "Duka Traders Limited" in queue and f"/compliance/kyc/{submission}" in queue
    _, detail = page(staff, f"/compliance/kyc/{submission}")
    assert "P051234567X" in detail and "certificate.pdf" in detail

    download = staff.get(f"/compliance/kyc/{submission}/documents/{document}", headers=HTML)
    assert download.status_code == 200 and download.data == CERTIFICATE
    assert download.mimetype == "application/pdf"
    assert download.headers["Content-Disposition"].startswith("attachment")
    assert "certificate.pdf" in download.headers["Content-Disposition"]

    approved = post_form(staff, f"/compliance/kyc/{submission}/approve")
    assert "KYC approved" in follow(staff, approved)[1]
    assert live_enabled(app, tenant.id) is True
    again = post_form(staff, f"/compliance/kyc/{submission}/approve")
    assert "already been approved or rejected" in follow(staff, again)[1]
    assert submission not in page(staff, "/compliance/kyc")[1]
    assert submission in page(staff, "/compliance/kyc", status="approved")[1]


def test_kyc_rejection_needs_a_reason(app, client, compliance, tenant, kyc_storage):
    submission, _ = submit_kyc(client, tenant)
    staff = compliance.client

    missing = post_form(staff, f"/compliance/kyc/{submission}/reject", {"reason": ""})
    assert missing.status_code == 400 and "This field is required" in missing.get_data(as_text=True)
    rejected = post_form(
        staff, f"/compliance/kyc/{submission}/reject", {"reason": "The ID is unreadable."}
    )
    _, detail = follow(staff, rejected)
    assert "KYC rejected" in detail and "The ID is unreadable." in detail
    assert live_enabled(app, tenant.id) is False
    assert entry_ids(app, tenant.id, AuditAction.KYC_REJECTED)


def test_kyc_documents_only_for_their_submission_and_compliance(
    app, client, sign_in, tenant, tenant_factory, kyc_storage
):
    submission, document = submit_kyc(client, tenant)
    other_submission, _ = submit_kyc(client, tenant_factory("Other Duka"))
    path = f"/compliance/kyc/{submission}/documents/{document}"
    compliance = sign_in("compliance").client

    assert (
        compliance.get(f"/compliance/kyc/{other_submission}/documents/{document}").status_code
        == 404
    )
    assert compliance.get(f"/compliance/kyc/kyc_missing/documents/{document}").status_code == 404
    assert page(compliance, "/compliance/kyc/kyc_missing")[0].status_code == 404
    assert sign_in("admin").client.get(path, headers=HTML).status_code == 403
    assert sign_in("owner", tenant=tenant).client.get(path, headers=HTML).status_code == 403
    assert sign_in("anonymous").client.get(path, headers=HTML).status_code == 302


def test_the_audit_page_shows_changed_values_as_json_like_the_csv():
    from frontend.compliance.audit import diff_summary

    diff = {
        "before": {"enabled": True, "url": "https://a.example/hooks"},
        "after": {"enabled": False, "url": "https://a.example/hooks", "enabled_events": ["*"]},
    }

    assert diff_summary(diff) == 'enabled: true → false; enabled_events: ["*"]'
