"""Dashboard payments: the filterable list with cursor pages, the CSV export, one payment
with its raw Daraja outcome, and its live status stream — each for the member's own tenant
and mode only."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import timedelta

from compliance.fraud import open_review_case
from core.extensions import db
from core.ids import new_id
from core.tenancy import tenant_scope
from payments.models import MpesaCallback
from tests.frontend.conftest import HTML, OpenStream, member_page, post_form
from tests.payments.test_reports import DAY_START, insert_push

ACCESS = [
    ("/dashboard/payments", member_page()),
    ("/dashboard/payments/export", member_page()),
]
LINK = re.compile(r'href="/dashboard/payments/(stk_[0-9a-z]+)"')


def test_access(check_access):
    check_access(ACCESS)


def listed(client, query: str = "") -> list[str]:
    response = client.get(f"/dashboard/payments{query}", headers=HTML)
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    return LINK.findall(response.get_data(as_text=True))


def test_list_filters_by_status_phone_dates_and_amount(app, sign_in):
    owner = sign_in("owner")
    tenant = owner.tenant.id
    at = DAY_START + timedelta(hours=12)  # noon EAT, 20 Nov 2026
    ok = insert_push(app, tenant, amount=100, created_at=at, phone="254711000001")
    failed = insert_push(app, tenant, status="failed", amount=200, created_at=at)
    big = insert_push(app, tenant, amount=90_000, created_at=at, phone="254711000001")
    # 23:30 EAT on 19 Nov, and 00:30 EAT on 21 Nov.
    before = insert_push(app, tenant, created_at=DAY_START - timedelta(minutes=30))
    after = insert_push(app, tenant, created_at=DAY_START + timedelta(hours=24, minutes=30))
    insert_push(app, tenant, created_at=at, livemode=True)

    client = owner.client
    assert listed(client) == [after, before, big, failed, ok]
    assert listed(client, "?status=failed") == [failed]
    assert listed(client, "?phone_number=0711000001") == [big, ok]
    assert listed(client, "?date_from=2026-11-20&date_to=2026-11-20") == [big, failed, ok]
    assert listed(client, "?date_from=2026-11-21") == [after]
    assert listed(client, "?date_to=2026-11-19") == [before]
    assert listed(client, "?amount_min=150&amount_max=1000") == [failed]
    assert listed(client, "?status=succeeded&phone_number=254711000001&amount_max=500") == [ok]


def test_a_mistyped_filter_is_reported_and_the_others_apply(app, sign_in):
    owner = sign_in("owner")
    ok = insert_push(app, owner.tenant.id)
    insert_push(app, owner.tenant.id, status="failed")
    page = owner.client.get(
        "/dashboard/payments?status=succeeded&phone_number=12345", headers=HTML
    ).get_data(as_text=True)
    assert "Must be a Kenyan mobile number" in page
    assert LINK.findall(page) == [ok]


def test_no_match_and_no_payments_have_their_own_empty_states(app, sign_in):
    owner = sign_in("owner")
    page = owner.client.get("/dashboard/payments", headers=HTML).get_data(as_text=True)
    assert "No test payments yet" in page and 'href="/dashboard/console"' in page
    insert_push(app, owner.tenant.id)
    page = owner.client.get("/dashboard/payments?status=expired", headers=HTML)
    assert "No payments match these filters" in page.get_data(as_text=True)


def test_list_pages_with_cursors_and_keeps_the_filters(app, sign_in):
    owner = sign_in("owner")
    ids = [insert_push(app, owner.tenant.id, amount=n + 1) for n in range(27)]
    insert_push(app, owner.tenant.id, status="failed")
    newest_first = ids[::-1]
    client = owner.client

    first = client.get("/dashboard/payments?status=succeeded", headers=HTML)
    page = first.get_data(as_text=True)
    assert LINK.findall(page) == newest_first[:25]
    older = re.search(r'href="([^"]*starting_after=[^"]*)"[^>]*>Older', page).group(1)
    older = older.replace("&amp;", "&")
    assert "status=succeeded" in older and "Newer" not in page

    second = client.get(older, headers=HTML).get_data(as_text=True)
    assert LINK.findall(second) == newest_first[25:]
    assert "Older" not in second
    newer = re.search(r'href="([^"]*ending_before=[^"]*)"[^>]*>← Newer', second).group(1)
    back = client.get(newer.replace("&amp;", "&"), headers=HTML).get_data(as_text=True)
    assert LINK.findall(back) == newest_first[:25]


def test_csv_export_has_every_matching_payment(app, sign_in):
    owner = sign_in("owner")
    ids = [insert_push(app, owner.tenant.id, amount=30) for _ in range(30)]
    insert_push(app, owner.tenant.id, amount=5)
    insert_push(app, owner.tenant.id, amount=30, livemode=True)

    response = owner.client.get("/dashboard/payments/export?amount_min=10", headers=HTML)

    assert response.status_code == 200
    assert response.mimetype == "text/csv"
    disposition = response.headers["Content-Disposition"]
    assert disposition.startswith("attachment;") and ".csv" in disposition
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert [row["id"] for row in rows] == ids[::-1]
    assert {row["amount"] for row in rows} == {"30"}
    assert {row["livemode"] for row in rows} == {"false"}  # as the JSON API writes booleans
    page = owner.client.get("/dashboard/payments?amount_min=10", headers=HTML)
    assert 'href="/dashboard/payments/export?amount_min=10"' in page.get_data(as_text=True)


def test_detail_shows_the_raw_daraja_outcome(app, sign_in):
    owner = sign_in("owner")
    push_id = insert_push(
        app,
        owner.tenant.id,
        amount=1234,
        result_code="0",
        result_description="The service request is processed successfully.",
        mpesa_receipt_number="SKX81LQ2PA",
        checkout_request_id="ws_CO_22112026",
    )
    body = {"Body": {"stkCallback": {"ResultCode": 0, "CheckoutRequestID": "ws_CO_22112026"}}}
    with app.app_context(), tenant_scope(owner.tenant.id):
        db.session.add(
            MpesaCallback(
                id=new_id("cb"),
                stk_push_id=push_id,
                body=json.dumps(body),
                outcome="applied",
                source_ip="196.201.214.200",
            )
        )
        db.session.commit()
        db.session.remove()

    response = owner.client.get(f"/dashboard/payments/{push_id}", headers=HTML)

    assert response.status_code == 200
    page = response.get_data(as_text=True)
    for text in ("KES 1,234", "SKX81LQ2PA", "ws_CO_22112026", "196.201.214.200", push_id):
        assert text in page
    assert "The service request is processed successfully." in page
    assert "&#34;ResultCode&#34;: 0" in page  # the callback body, pretty-printed
    assert (
        '<span class="badge badge-succeeded" data-field="status" data-status="succeeded">'
        "succeeded</span>"
    ) in page
    assert "data-stream" not in page  # final: nothing left to follow


def test_a_pending_payment_follows_its_stream(app, sign_in):
    owner = sign_in("viewer")
    push_id = insert_push(app, owner.tenant.id, status="pending")
    page = owner.client.get(f"/dashboard/payments/{push_id}", headers=HTML).get_data(as_text=True)
    assert f'data-stream="/dashboard/payments/{push_id}/stream"' in page
    assert (
        '<span class="badge badge-pending" data-field="status" data-status="pending">pending</span>'
    ) in page


def test_detail_shows_flags_and_the_review_case(app, sign_in):
    owner = sign_in("owner")
    push_id = insert_push(app, owner.tenant.id, flagged_reason="callback amount 5 differs from 50")
    with app.app_context(), tenant_scope(owner.tenant.id):
        open_review_case(owner.tenant.id, push_id, "rule_big_amounts")
        db.session.commit()
        db.session.remove()
    page = owner.client.get(f"/dashboard/payments/{push_id}", headers=HTML).get_data(as_text=True)
    assert "callback amount 5 differs from 50" in page
    assert "rule_big_amounts" in page and "badge-open" in page


def test_detail_says_a_payment_succeeded_after_lango_expired_it(app, sign_in):
    owner = sign_in("owner")
    push_id = insert_push(app, owner.tenant.id, expired_at=DAY_START)
    page = owner.client.get(f"/dashboard/payments/{push_id}", headers=HTML).get_data(as_text=True)
    assert 'data-field="expired_at"' in page and "it succeeded late" in page


def test_detail_says_why_a_finished_payment_is_held(app, sign_in):
    owner = sign_in("owner")
    reason = "M-Pesa reported this push paid (receipt UKL1ABCDEF) after reporting it cancelled"
    push_id = insert_push(app, owner.tenant.id, status="cancelled", flagged_reason=reason)
    page = owner.client.get(f"/dashboard/payments/{push_id}", headers=HTML).get_data(as_text=True)
    assert reason in page and "Check it with Safaricom" in page


def test_another_tenants_payment_is_404_everywhere(app, sign_in):
    alpha = sign_in("owner")
    beta = sign_in("owner")
    theirs = insert_push(app, beta.tenant.id, status="pending", amount=4321)
    assert beta.client.get(f"/dashboard/payments/{theirs}", headers=HTML).status_code == 200

    detail = alpha.client.get(f"/dashboard/payments/{theirs}", headers=HTML)
    assert detail.status_code == 404 and "Page not found" in detail.get_data(as_text=True)
    assert alpha.client.get(f"/dashboard/payments/{theirs}/stream").status_code == 404
    assert theirs not in alpha.client.get("/dashboard/payments", headers=HTML).get_data(True)
    export = alpha.client.get("/dashboard/payments/export").get_data(as_text=True)
    assert theirs not in export and "4321" not in export


def test_the_other_modes_payment_is_404(app, sign_in):
    owner = sign_in("owner")
    live = insert_push(app, owner.tenant.id, livemode=True)
    assert owner.client.get(f"/dashboard/payments/{live}", headers=HTML).status_code == 404
    post_form(owner.client, "/dashboard/mode", {"livemode": "on"})
    assert owner.client.get(f"/dashboard/payments/{live}", headers=HTML).status_code == 200
    assert listed(owner.client) == [live]


def test_the_stream_of_a_final_payment_sends_it_once_and_ends(app, sign_in):
    owner = sign_in("viewer")
    push_id = insert_push(
        app, owner.tenant.id, status="failed", result_code="1", result_description="No funds"
    )
    response = owner.client.get(f"/dashboard/payments/{push_id}/stream")
    assert response.status_code == 200
    assert response.mimetype == "text/event-stream"
    events = [
        json.loads(line.removeprefix("data: "))
        for line in response.get_data(as_text=True).splitlines()
        if line.startswith("data: ")
    ]
    assert events == [
        {
            "id": push_id,
            "status": "failed",
            "result_code": "1",
            "result_desc": "No funds",
            "mpesa_receipt_number": None,
            "final": True,
        }
    ]


def test_signed_out_visitors_are_sent_to_sign_in_from_details(app, client, sign_in):
    owner = sign_in("owner")
    push_id = insert_push(app, owner.tenant.id)
    assert client.get(f"/dashboard/payments/{push_id}", headers=HTML).status_code == 302
    assert client.get(f"/dashboard/payments/{push_id}/stream").status_code == 302


def test_lists_mask_phone_numbers_and_the_payments_page_shows_it(app, sign_in):
    """Privacy by default: the overview and the payments list show 2547•••••678; only one
    payment's own page shows the whole number."""
    owner = sign_in("owner")
    push_id = insert_push(app, owner.tenant.id, phone="254712345678")

    for path in ("/dashboard", "/dashboard/payments"):
        page = owner.client.get(path, headers=HTML).get_data(as_text=True)
        assert "2547•••••678" in page and "254712345678" not in page, path
    detail = owner.client.get(f"/dashboard/payments/{push_id}", headers=HTML)
    assert "254712345678" in detail.get_data(as_text=True)


def test_a_member_may_hold_only_a_few_live_streams_at_once(app, sign_in):
    # Each stream holds a web thread for up to ten minutes.
    from frontend.dashboard.payments import STREAMS_PER_MEMBER

    owner = sign_in("owner")
    push_id = insert_push(app, owner.tenant.id, status="pending")
    path = f"/dashboard/payments/{push_id}/stream"
    opened = [OpenStream(owner.client, path) for _ in range(STREAMS_PER_MEMBER)]
    assert [response.status_code for response in opened] == [200] * STREAMS_PER_MEMBER
    assert owner.client.get(path).status_code == 429
    opened.pop().close()  # a tab closed (newest first: each holds a request context)
    opened.append(OpenStream(owner.client, path))
    assert opened[-1].status_code == 200
    for response in reversed(opened):
        response.close()
