"""STK push through the public API, against the real Daraja sandbox and real callbacks."""

import json
import secrets
import threading
from datetime import UTC, datetime, timedelta

import pytest
import requests
from sqlalchemy import select, text

from core.extensions import db
from core.tenancy import tenant_scope
from core.unit_of_work import tenant_unit_of_work, unit_of_work
from payments import service
from payments.credentials import save_credentials
from payments.jobs import reconcile_pending_pushes, reconcile_tenant
from payments.models import MpesaCallback, StkPush
from tenants.service import create_api_key, get_tenant
from tests.conftest import ApiClient
from tests.served import LATE_CALLBACK, quota_counted, wait_for_status

STKPUSHES = "/v1/stk-pushes"
PROCESS_REQUEST = "/mpesa/stkpush/v1/processrequest"


def random_phone() -> str:
    # 2547 + 8 digits, avoiding the sandbox's magic 25470000xxxx range.
    return "2547" + str(secrets.randbelow(10**8)).zfill(8).replace("0000", "1111", 1)


def push_body(phone=None, amount=100, **extra):
    return {
        "phone_number": phone or random_phone(),
        "amount": amount,
        "account_reference": "INV0001",
        "description": "Order 1001",
        **extra,
    }


def payment_events(app, tenant_id, push_id):
    with app.app_context(), tenant_scope(tenant_id):
        rows = db.session.execute(
            text("SELECT type FROM events WHERE data->'object'->>'id' = :id"), {"id": push_id}
        ).scalars()
        return list(rows)


@pytest.mark.parametrize(
    ("phone", "status", "result_code"),
    [
        ("254708374149", "succeeded", "0"),
        ("254700000001", "failed", "1"),
        ("254700001032", "cancelled", "1032"),
        ("254700001037", "failed", "1037"),
        ("254700001019", "expired", "1019"),
        ("254700002001", "failed", "2001"),
    ],
)
def test_magic_numbers_end_in_their_documented_state(
    platform, app, api, tenant, phone, status, result_code
):
    created = api.post(STKPUSHES, json=push_body(phone))
    assert created.status_code == 202, created.get_json()
    assert created.get_json()["status"] == "pending"
    assert created.get_json()["id"].startswith("stk_")

    final = wait_for_status(api, created.get_json()["id"])

    assert (final["status"], final["result_code"]) == (status, result_code)
    assert final["result_description"]
    if status == "succeeded":
        assert len(final["mpesa_receipt_number"]) == 10
        assert final["transaction_date"].endswith("Z")
    else:
        assert final["mpesa_receipt_number"] is None
    assert payment_events(app, tenant.id, final["id"]) == [f"payment.{status}"]


def test_lock_error_is_refused_at_once_and_nothing_is_pending(platform, app, api, tenant):
    response = api.post(STKPUSHES, json=push_body("254700001001"))

    assert response.status_code == 502
    error = response.get_json()["error"]
    assert (error["type"], error["code"]) == ("upstream_error", "daraja_unavailable")
    assert error["daraja_error_code"] == "500.001.1001"
    push = api.get(f"{STKPUSHES}/{error['stk_push_id']}").get_json()
    assert push["status"] == "failed" and "lock subscriber" in push["result_description"]
    assert payment_events(app, tenant.id, push["id"]) == ["payment.failed"]


def test_daraja_ids_are_kept_for_a_push_made_with_an_idempotency_key(platform, api):
    created = api.post(
        STKPUSHES, json=push_body("254700000099"), headers={"Idempotency-Key": "daraja-ids"}
    ).get_json()

    assert created["checkout_request_id"]
    stored = api.get(f"{STKPUSHES}/{created['id']}").get_json()
    assert stored["checkout_request_id"] == created["checkout_request_id"]


def test_duplicate_callback_changes_state_once(platform, app, api, tenant):
    push_id = api.post(STKPUSHES, json=push_body("254700000098")).get_json()["id"]
    assert wait_for_status(api, push_id)["status"] == "succeeded"

    with app.app_context(), tenant_scope(tenant.id):
        for _ in range(50):  # the second copy follows the first closely
            outcomes = db.session.scalars(
                select(MpesaCallback.outcome).where(MpesaCallback.stk_push_id == push_id)
            ).all()
            db.session.rollback()
            if len(outcomes) == 2:
                break
            threading.Event().wait(0.1)
    assert sorted(outcomes) == ["applied", "duplicate"]
    assert payment_events(app, tenant.id, push_id) == ["payment.succeeded"]


def test_no_callback_is_resolved_by_reconciliation(platform, app, api, tenant):
    push_id = api.post(STKPUSHES, json=push_body("254700000099")).get_json()["id"]
    threading.Event().wait(1.5)  # past the sandbox's decision and RECONCILE_AFTER_SECONDS
    assert api.get(f"{STKPUSHES}/{push_id}").get_json()["status"] == "pending"

    with app.app_context():
        report = reconcile_pending_pushes()

    assert report["resolved"] >= 1
    final = api.get(f"{STKPUSHES}/{push_id}").get_json()
    assert (final["status"], final["result_code"]) == ("succeeded", "0")
    assert payment_events(app, tenant.id, push_id) == ["payment.succeeded"]


def test_late_callback_still_lands(platform, api):
    push_id = api.post(STKPUSHES, json=push_body("254700000097")).get_json()["id"]
    assert wait_for_status(api, push_id, timeout=LATE_CALLBACK + 15)["status"] == "succeeded"


def test_push_without_outcome_expires_after_the_deadline(platform, app, api, tenant):
    push_id = api.post(STKPUSHES, json=push_body("254700000099")).get_json()["id"]
    report = expire_unacknowledged(app, tenant.id, push_id)

    assert report.expired == 1
    final = api.get(f"{STKPUSHES}/{push_id}").get_json()
    assert final["status"] == "expired"
    assert payment_events(app, tenant.id, push_id) == ["payment.expired"]


def test_concurrent_pushes_with_shared_idempotency_keys_call_daraja_once_per_key(
    platform, app, api, tenant, outbound
):
    from tests.billing.test_subscription import upgrade  # that module imports this one

    upgrade(app, api, "scale")  # a rate limit 50 requests fit in
    keys = [f"order-{i}-{secrets.token_hex(4)}" for i in range(10)]
    bodies = {key: push_body() for key in keys}
    results: list[tuple[str, int, dict]] = []
    lock = threading.Lock()

    def send(key):
        response = requests.post(
            f"{platform.url}{STKPUSHES}",
            json=bodies[key],
            headers={"Authorization": f"Bearer {tenant.secret}", "Idempotency-Key": key},
            timeout=30,
        )
        with lock:
            results.append((key, response.status_code, response.json()))

    threads = [threading.Thread(target=send, args=(keys[i % 10],)) for i in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert len(results) == 50
    assert {status for _, status, _ in results} <= {202, 409}
    ids = {body["id"] for _, status, body in results if status == 202}
    assert len(ids) == 10
    for _, status, body in results:
        if status == 409:
            assert body["error"]["code"] == "idempotency_key_in_use"
    assert outbound.count(PROCESS_REQUEST) == 10
    listed = api.get(f"{STKPUSHES}?limit=100").get_json()["data"]
    assert len(listed) == 10


def test_idempotent_retry_replays_and_a_different_body_conflicts(platform, api):
    body = push_body()
    first = api.post(STKPUSHES, json=body, headers={"Idempotency-Key": "k-1"})
    again = api.post(STKPUSHES, json=body, headers={"Idempotency-Key": "k-1"})
    other = api.post(STKPUSHES, json={**body, "amount": 101}, headers={"Idempotency-Key": "k-1"})

    assert first.status_code == again.status_code == 202
    assert again.get_json() == first.get_json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert other.status_code == 409
    assert other.get_json()["error"]["code"] == "idempotency_key_reused"


def test_validation_failures_are_not_stored_under_the_key(platform, api):
    bad = api.post(STKPUSHES, json=push_body(amount=0), headers={"Idempotency-Key": "k-2"})
    good = api.post(STKPUSHES, json=push_body(), headers={"Idempotency-Key": "k-2"})
    assert (bad.status_code, good.status_code) == (400, 202)


def test_one_oauth_call_serves_a_hundred_pushes(platform, app, api, outbound):
    from tests.billing.test_subscription import upgrade  # that module imports this one

    upgrade(app, api, "scale")  # a rate limit 100 pushes fit in
    for _ in range(100):
        assert api.post(STKPUSHES, json=push_body()).status_code == 202
    assert outbound.count(PROCESS_REQUEST) == 100
    assert outbound.count("/oauth/v1/generate") <= 1


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("amount", 0),
        ("amount", 250_001),
        ("amount", 10.5),
        ("amount", "100"),
        ("phone_number", "0808374149"),
        ("phone_number", "+255708374149"),
        ("account_reference", "A" * 13),
        ("description", "D" * 14),
        ("metadata", "not-an-object"),
    ],
)
def test_invalid_push_names_the_field(api, field, value):
    response = api.post(STKPUSHES, json=push_body(**{field: value}))
    assert response.status_code == 400
    assert response.get_json()["error"]["param"] == field


def test_phone_numbers_are_normalised(platform, api):
    response = api.post(STKPUSHES, json=push_body("0712345678"))
    assert response.get_json()["phone_number"] == "254712345678"


def test_another_tenants_push_is_404(platform, client, tenant_factory):
    alpha, beta = tenant_factory("Alpha Ltd"), tenant_factory("Beta Ltd")
    push_id = ApiClient(client, beta.secret).post(STKPUSHES, json=push_body()).get_json()["id"]
    alpha_api = ApiClient(client, alpha.secret)

    assert alpha_api.get(f"{STKPUSHES}/{push_id}").status_code == 404
    assert alpha_api.get(f"{STKPUSHES}/{push_id}/stream").status_code == 404
    assert alpha_api.get(STKPUSHES).get_json()["data"] == []


def test_live_key_needs_credentials_and_enablement(platform, app, client, tenant):
    with app.app_context(), unit_of_work():
        live_secret = create_api_key(tenant.id, livemode=True, name="live").secret
    live = ApiClient(client, live_secret)

    refused = live.post(STKPUSHES, json=push_body())

    assert refused.status_code == 403
    assert refused.get_json()["error"]["code"] == "livemode_not_enabled"


def test_test_keys_never_see_live_pushes(platform, app, client, api, tenant):
    with app.app_context(), unit_of_work():
        save_credentials(
            tenant.id,
            shortcode="174379",
            kind="paybill",
            till_number=None,
            consumer_key="lango_sandbox_key",
            consumer_secret="lango_sandbox_secret",
            passkey=app.extensions["lango.settings"].SANDBOX_PASSKEY,
        )
        get_tenant(tenant.id).live_enabled = True
        db.session.execute(
            text("UPDATE public.subscriptions SET plan_code = 'starter' WHERE tenant_id = :t"),
            {"t": tenant.id},
        )
        live_secret = create_api_key(tenant.id, livemode=True, name="live").secret
    # Live mode normally talks to Safaricom; here its base URL is our sandbox.
    settings = app.extensions["lango.settings"]
    original = settings.DARAJA_BASE_URL
    object.__setattr__(settings, "DARAJA_BASE_URL", settings.SANDBOX_BASE_URL)
    try:
        live = ApiClient(client, live_secret)
        live_push = live.post(STKPUSHES, json=push_body())
        assert live_push.status_code == 202, live_push.get_json()
        assert live_push.get_json()["livemode"] is True
        test_push = api.post(STKPUSHES, json=push_body()).get_json()
    finally:
        object.__setattr__(settings, "DARAJA_BASE_URL", original)

    assert api.get(f"{STKPUSHES}/{live_push.get_json()['id']}").status_code == 404
    assert [p["id"] for p in api.get(STKPUSHES).get_json()["data"]] == [test_push["id"]]
    assert [p["id"] for p in live.get(STKPUSHES).get_json()["data"]] == [live_push.get_json()["id"]]


def test_daraja_down_fails_the_push_with_503(app, api, tenant):
    settings = app.extensions["lango.settings"]
    original = settings.SANDBOX_BASE_URL
    object.__setattr__(settings, "SANDBOX_BASE_URL", "http://127.0.0.1:1")  # nothing listens
    try:
        response = api.post(STKPUSHES, json=push_body())
    finally:
        object.__setattr__(settings, "SANDBOX_BASE_URL", original)

    assert response.status_code == 503
    error = response.get_json()["error"]
    assert error["code"] == "daraja_unavailable"
    assert api.get(f"{STKPUSHES}/{error['stk_push_id']}").get_json()["status"] == "failed"


def test_forged_callback_tokens_are_404(platform, tenant):
    body = {"Body": {"stkCallback": {"ResultCode": 0}}}
    forged = [
        "nonsense",
        tenant.id.removeprefix("ten_") + "." + secrets.token_urlsafe(32),
        "0" * 26 + "." + secrets.token_urlsafe(32),
    ]
    for token in forged:
        response = requests.post(
            f"{platform.url}/callbacks/mpesa/stk/{token}", json=body, timeout=5
        )
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "resource_missing"


@pytest.fixture
def callback_token(monkeypatch) -> dict:
    """{"value": the callback URL token of the latest push made}, for forging callbacks."""
    token = {}
    original = service.callback_token

    def remember(tenant_id):
        token["value"] = original(tenant_id)
        return token["value"]

    monkeypatch.setattr(service, "callback_token", remember)
    return token


def test_callback_with_a_wrong_amount_is_flagged_not_applied(
    platform, app, api, tenant, callback_token
):
    push = api.post(STKPUSHES, json=push_body("254700000099", amount=500)).get_json()
    forged_success = {
        "Body": {
            "stkCallback": {
                "MerchantRequestID": "x",
                "CheckoutRequestID": push["checkout_request_id"],
                "ResultCode": 0,
                "ResultDesc": "The service request is processed successfully.",
                "CallbackMetadata": {
                    "Item": [
                        {"Name": "Amount", "Value": 1.00},
                        {"Name": "MpesaReceiptNumber", "Value": "UKL1ABCDEF"},
                        {"Name": "Balance"},
                        {"Name": "TransactionDate", "Value": 20261122101010},
                        {"Name": "PhoneNumber", "Value": int(push["phone_number"])},
                    ]
                },
            }
        }
    }
    url = f"{platform.url}/callbacks/mpesa/stk/{callback_token['value']}"
    response = requests.post(url, json=forged_success, timeout=5)

    assert response.status_code == 200
    assert response.json() == {"ResultCode": 0, "ResultDesc": "Accepted"}
    assert api.get(f"{STKPUSHES}/{push['id']}").get_json()["status"] == "pending"
    with app.app_context(), tenant_scope(tenant.id):
        stored = db.session.get(StkPush, push["id"])
        callback = db.session.scalars(
            select(MpesaCallback).where(MpesaCallback.stk_push_id == push["id"])
        ).one()
        assert "amount" in stored.flagged_reason
        assert callback.outcome == "mismatch"
        assert json.loads(callback.body) == forged_success


def test_a_callback_with_nul_characters_is_kept_and_not_applied(
    platform, app, api, tenant, callback_token
):
    push = api.post(STKPUSHES, json=push_body("254700000099")).get_json()
    forged = {
        "Body": {
            "stkCallback": {
                "CheckoutRequestID": push["checkout_request_id"],
                "ResultCode": 1032,
                "ResultDesc": "Request cancelled\u0000 by user",
            }
        }
    }
    url = f"{platform.url}/callbacks/mpesa/stk/{callback_token['value']}"
    response = requests.post(url, json=forged, timeout=5)
    raw = requests.post(url, data=b'{"Body": "\x00"}', timeout=5)

    assert response.status_code == 200 and raw.status_code == 200
    assert api.get(f"{STKPUSHES}/{push['id']}").get_json()["status"] == "pending"
    with app.app_context(), tenant_scope(tenant.id):
        callbacks = db.session.scalars(
            select(MpesaCallback).where(MpesaCallback.stk_push_id == push["id"])
        ).all()
        assert [callback.outcome for callback in callbacks] == ["unparseable", "unparseable"]
        bodies = {callback.body for callback in callbacks}
        assert '{"Body": "\ufffd"}' in bodies  # a raw NUL byte, kept as U+FFFD
        bodies.remove('{"Body": "\ufffd"}')
        assert json.loads(bodies.pop()) == forged  # the JSON escape is text, kept as sent


def test_status_stream_emits_each_change_and_closes(platform, api, tenant):
    push_id = api.post(STKPUSHES, json=push_body()).get_json()["id"]
    response = requests.get(
        f"{platform.url}{STKPUSHES}/{push_id}/stream",
        headers={"Authorization": f"Bearer {tenant.secret}"},
        stream=True,
        timeout=30,
    )
    assert response.headers["Content-Type"].startswith("text/event-stream"), response.text[:500]
    statuses = [
        json.loads(line.removeprefix("data: "))["status"]
        for line in response.iter_lines(decode_unicode=True)
        if line.startswith("data: ")
    ]
    assert statuses[-1] == "succeeded"
    assert statuses[0] in {"pending", "succeeded"}


def test_list_filters_and_csv_export(platform, api):
    phone = random_phone()
    ids = []
    for _ in range(2):  # one at a time: M-Pesa locks a phone while a prompt is open
        ids.append(api.post(STKPUSHES, json=push_body(phone)).get_json()["id"])
        wait_for_status(api, ids[-1])
    other = api.post(STKPUSHES, json=push_body()).get_json()["id"]
    wait_for_status(api, other)

    by_phone = api.get(f"{STKPUSHES}?phone_number=0{phone[3:]}").get_json()["data"]
    assert [p["id"] for p in by_phone] == ids[::-1]
    since = (datetime.now(UTC) - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    recent = api.get(f"{STKPUSHES}?status=succeeded&created[gte]={since}").get_json()["data"]
    assert {p["id"] for p in recent} == {*ids, other}
    assert api.get(f"{STKPUSHES}?status=failed").get_json()["data"] == []

    export = api.get(f"{STKPUSHES}/export?phone_number={phone}")
    assert export.status_code == 200 and export.mimetype == "text/csv"
    lines = export.get_data(as_text=True).strip().splitlines()
    assert lines[0].startswith("id,status,livemode,phone_number,amount")
    assert [line.split(",")[0] for line in lines[1:]] == ids[::-1]


def test_callback_allow_list_admits_only_listed_networks(app):
    settings = app.extensions["lango.settings"]
    object.__setattr__(settings, "MPESA_CALLBACK_ALLOWED_IPS", ("196.201.214.0/24",))
    try:
        with app.app_context():
            assert service._allowed_callback_source("196.201.214.200")
            assert not service._allowed_callback_source("127.0.0.1")
            assert not service._allowed_callback_source("not-an-ip")
            assert not service._allowed_callback_source(None)
    finally:
        object.__setattr__(settings, "MPESA_CALLBACK_ALLOWED_IPS", ())
    with app.app_context():
        assert service._allowed_callback_source("127.0.0.1")  # no list: no check


# --- what M-Pesa reports is never discarded ----------------------------------------------


def daraja_callback(push: dict, result_code=0, **item_values) -> dict:
    """A callback with Daraja's shape (daraja.md §3.1) about `push`; a success carries the
    push's own amount, phone and a receipt unless `item_values` says otherwise (None: the
    item is left out)."""
    callback = {
        "MerchantRequestID": "29115-34620561-1",
        "CheckoutRequestID": push["checkout_request_id"] or "ws_CO_191220191020363925",
        "ResultCode": result_code,
        "ResultDesc": "The service request is processed successfully.",
    }
    if result_code == 0:
        values = {
            "Amount": float(push["amount"]),
            "MpesaReceiptNumber": "UKL1ABCDEF",
            "TransactionDate": 20261122101010,
            "PhoneNumber": int(push["phone_number"]),
            **item_values,
        }
        callback["CallbackMetadata"] = {
            "Item": [
                {"Name": name, "Value": value}
                for name, value in values.items()
                if value is not None
            ]
        }
    return {"Body": {"stkCallback": callback}}


def post_callback(client, token: str, body, **kwargs):
    data = body if isinstance(body, bytes) else json.dumps(body)
    return client.post(
        f"/callbacks/mpesa/stk/{token}", data=data, content_type="application/json", **kwargs
    )


def stored_push(app, tenant_id, push_id) -> StkPush:
    with app.app_context(), tenant_scope(tenant_id):
        push = db.session.get(StkPush, push_id)
        db.session.expunge(push)
        return push


def callback_outcomes(app, tenant_id, push_id) -> list[str]:
    with app.app_context(), tenant_scope(tenant_id):
        return list(
            db.session.scalars(
                select(MpesaCallback.outcome)
                .where(MpesaCallback.stk_push_id == push_id)
                .order_by(MpesaCallback.received_at)
            )
        )


def flagged_events(app, tenant_id, push_id) -> list[dict]:
    with app.app_context(), tenant_scope(tenant_id):
        return list(
            db.session.execute(
                text(
                    "SELECT data->'object' FROM events WHERE type = 'payment.flagged' "
                    "AND data->'object'->>'id' = :id"
                ),
                {"id": push_id},
            ).scalars()
        )


def expire_with_checkout_id(
    app, tenant_id, push_id, checkout_request_id: str | None
) -> service.ReconcileReport:
    """Reconciliation past the deadline of a push whose CheckoutRequestID is
    `checkout_request_id`: None, Daraja never acknowledged it (its call timed out, or the
    process died before or during it), so there is nothing to query; an id Daraja does not
    know, its query fails. Either way no outcome comes, and the push expires."""
    with app.app_context(), tenant_scope(tenant_id):
        db.session.execute(
            text("UPDATE stk_pushes SET checkout_request_id = :checkout WHERE id = :id"),
            {"id": push_id, "checkout": checkout_request_id},
        )
        db.session.commit()
        later = datetime.now(UTC) + timedelta(minutes=6)
        return reconcile_tenant(tenant_id, now=later)


def expire_unacknowledged(app, tenant_id, push_id) -> service.ReconcileReport:
    return expire_with_checkout_id(app, tenant_id, push_id, None)


def test_a_success_after_lango_expired_the_push_makes_it_succeed_late(
    platform, app, client, api, tenant, callback_token
):
    push = api.post(STKPUSHES, json=push_body("254700000099")).get_json()
    token = callback_token["value"]
    assert expire_unacknowledged(app, tenant.id, push["id"]).expired == 1
    expired = api.get(f"{STKPUSHES}/{push['id']}").get_json()
    assert expired["status"] == "expired" and expired["expired_at"].endswith("Z")
    assert quota_counted(app, tenant.id) == (0, 0, 1)  # never acknowledged: not billed

    response = post_callback(client, token, daraja_callback(push))
    again = post_callback(client, token, daraja_callback(push))

    assert response.status_code == again.status_code == 200
    assert response.get_json() == {"ResultCode": 0, "ResultDesc": "Accepted"}
    final = api.get(f"{STKPUSHES}/{push['id']}").get_json()
    assert (final["status"], final["result_code"]) == ("succeeded", "0")
    assert final["mpesa_receipt_number"] == "UKL1ABCDEF"
    assert final["expired_at"] == expired["expired_at"]  # it says it succeeded late
    assert sorted(payment_events(app, tenant.id, push["id"])) == [
        "payment.expired",
        "payment.succeeded",
    ]
    assert callback_outcomes(app, tenant.id, push["id"]) == ["applied", "duplicate"]
    assert quota_counted(app, tenant.id) == (1, 1, 1)  # paid: counted again, once


def test_a_success_after_mpesa_cancelled_the_push_is_held_and_flagged(
    platform, app, client, api, tenant, callback_token
):
    push = api.post(STKPUSHES, json=push_body("254700001032")).get_json()
    token = callback_token["value"]
    assert wait_for_status(api, push["id"])["status"] == "cancelled"

    response = post_callback(client, token, daraja_callback(push))
    post_callback(client, token, daraja_callback(push))  # a copy changes nothing more

    assert response.status_code == 200
    final = api.get(f"{STKPUSHES}/{push['id']}").get_json()
    assert (final["status"], final["result_code"]) == ("cancelled", "1032")
    assert "paid" in final["flagged_reason"] and "UKL1ABCDEF" in final["flagged_reason"]
    assert "cancelled" in final["flagged_reason"]
    assert callback_outcomes(app, tenant.id, push["id"])[-2:] == ["mismatch", "mismatch"]
    assert sorted(payment_events(app, tenant.id, push["id"])) == [
        "payment.cancelled",
        "payment.flagged",
    ]
    assert [event["flagged_reason"] for event in flagged_events(app, tenant.id, push["id"])] == [
        final["flagged_reason"]
    ]


def test_reconciliation_applies_a_success_for_a_push_lango_expired_meanwhile(
    platform, app, api, tenant
):
    push_id = api.post(STKPUSHES, json=push_body("254700000099")).get_json()["id"]
    threading.Event().wait(1.5)  # past the sandbox's decision: its STK query says paid
    with app.app_context(), tenant_scope(tenant.id):
        # Another worker's expiry landed between this worker's query and its row lock.
        db.session.execute(
            text(
                "UPDATE stk_pushes SET status = 'expired', result_code = 'expired', "
                "expired_at = now(), resolved_at = now() WHERE id = :id"
            ),
            {"id": push_id},
        )
        db.session.commit()
        report = service.ReconcileReport()
        with tenant_unit_of_work(tenant.id):
            service.reconcile_push(push_id, datetime.now(UTC), report)

    final = api.get(f"{STKPUSHES}/{push_id}").get_json()
    assert (final["status"], final["result_code"]) == ("succeeded", "0")
    assert final["expired_at"] is not None
    assert report.resolved == 1
    assert payment_events(app, tenant.id, push_id) == ["payment.succeeded"]


def expired_by_lango(app, tenant_id, push_id, *, minutes_ago: int) -> None:
    """Lango expired this acknowledged push `minutes_ago` (its query still said "being
    processed" at the deadline) and the callback never came."""
    with app.app_context(), tenant_scope(tenant_id):
        db.session.execute(
            text(
                "UPDATE stk_pushes SET status = 'expired', result_code = 'expired', "
                "expired_at = now() - make_interval(mins => :m), "
                "last_queried_at = now() - make_interval(mins => :m), "
                "resolved_at = now() - make_interval(mins => :m) WHERE id = :id"
            ),
            {"id": push_id, "m": minutes_ago},
        )
        db.session.commit()


def test_reconciliation_keeps_asking_about_an_acknowledged_push_lango_expired(
    platform, app, api, tenant
):
    push_id = api.post(STKPUSHES, json=push_body("254700000099")).get_json()["id"]
    threading.Event().wait(1.5)  # past the sandbox's decision: its STK query says paid
    expired_by_lango(app, tenant.id, push_id, minutes_ago=2)
    with app.app_context(), tenant_scope(tenant.id):
        # Asked again only once RECONCILE_EXPIRED_INTERVAL_SECONDS (5 min) has passed.
        assert reconcile_tenant(tenant.id).queried == 0
        later = datetime.now(UTC) + timedelta(minutes=4)
        report = reconcile_tenant(tenant.id, now=later)

    assert (report.queried, report.resolved) == (1, 1)
    final = api.get(f"{STKPUSHES}/{push_id}").get_json()
    assert (final["status"], final["result_code"]) == ("succeeded", "0")
    assert final["expired_at"] is not None
    assert payment_events(app, tenant.id, push_id) == ["payment.succeeded"]


def test_an_expired_push_is_no_longer_asked_about_after_the_follow_up_window(
    platform, app, api, tenant
):
    push_id = api.post(STKPUSHES, json=push_body("254700000099")).get_json()["id"]
    expired_by_lango(app, tenant.id, push_id, minutes_ago=25 * 60)
    with app.app_context(), tenant_scope(tenant.id):
        assert reconcile_tenant(tenant.id).queried == 0
    assert api.get(f"{STKPUSHES}/{push_id}").get_json()["status"] == "expired"


def test_a_failure_reported_for_an_expired_push_is_recorded_and_ends_the_follow_up(
    platform, app, client, api, tenant, callback_token
):
    push = api.post(STKPUSHES, json=push_body("254700000099")).get_json()
    expired_by_lango(app, tenant.id, push["id"], minutes_ago=10)

    post_callback(client, callback_token["value"], daraja_callback(push, 1032))

    final = api.get(f"{STKPUSHES}/{push['id']}").get_json()
    assert (final["status"], final["result_code"]) == ("expired", "1032")
    with app.app_context(), tenant_scope(tenant.id):
        assert reconcile_tenant(tenant.id).queried == 0
    # M-Pesa's later success still counts: the push succeeds late.
    post_callback(client, callback_token["value"], daraja_callback(push))
    assert api.get(f"{STKPUSHES}/{push['id']}").get_json()["status"] == "succeeded"


def test_a_push_daraja_never_acknowledged_is_released_once_when_it_expires(
    platform, app, api, tenant
):
    push_id = api.post(STKPUSHES, json=push_body("254700000099")).get_json()["id"]
    with app.app_context(), tenant_scope(tenant.id):
        db.session.execute(
            text("UPDATE stk_pushes SET checkout_request_id = NULL WHERE id = :id"),
            {"id": push_id},
        )
        db.session.commit()
    assert quota_counted(app, tenant.id) == (1, 1, 1)
    later = datetime.now(UTC) + timedelta(minutes=6)
    start = threading.Barrier(4)
    reports = []

    def reconcile():
        with app.app_context(), tenant_scope(tenant.id):
            start.wait()
            reports.append(reconcile_tenant(tenant.id, now=later))

    threads = [threading.Thread(target=reconcile) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert sum(report.expired for report in reports) == 1
    assert quota_counted(app, tenant.id) == (0, 0, 1)
    assert payment_events(app, tenant.id, push_id) == ["payment.expired"]


def test_a_late_failure_for_a_released_push_bills_it_but_leaves_it_expired(
    platform, app, client, api, tenant, callback_token
):
    push = api.post(STKPUSHES, json=push_body("254700000099")).get_json()
    expire_unacknowledged(app, tenant.id, push["id"])
    assert quota_counted(app, tenant.id) == (0, 0, 1)

    post_callback(client, callback_token["value"], daraja_callback(push, 1032))

    assert api.get(f"{STKPUSHES}/{push['id']}").get_json()["status"] == "expired"
    assert quota_counted(app, tenant.id) == (1, 1, 1)  # it reached Daraja after all


def test_a_push_daraja_acknowledged_stays_billed_when_it_expires(platform, app, api, tenant):
    push_id = api.post(STKPUSHES, json=push_body("254700000099")).get_json()["id"]
    # Daraja acknowledged it, and its query now fails: no outcome before the deadline.
    assert expire_with_checkout_id(app, tenant.id, push_id, "ws_CO_unknown").expired == 1

    assert quota_counted(app, tenant.id) == (1, 1, 1)


# --- callbacks that are not Daraja's -----------------------------------------------------


def _without(mapping: dict, key: str) -> dict:
    return {k: v for k, v in mapping.items() if k != key}


def _malformed_callbacks(push: dict) -> list:
    """Bodies that are not Daraja's STK callback, built on a valid one."""
    good = daraja_callback(push)
    stk = good["Body"]["stkCallback"]
    metadata = stk["CallbackMetadata"]

    def with_stk(**changes):
        return {"Body": {"stkCallback": {**stk, **changes}}}

    def with_item(name, value):
        items = [item for item in metadata["Item"] if item["Name"] != name]
        return with_stk(CallbackMetadata={"Item": [*items, {"Name": name, "Value": value}]})

    return [
        {"a": 1},
        [good],
        {"Body": {"stkCallback": {"ResultCode": {"a": 1}}}},
        with_stk(ResultCode={"a": 1}),
        with_stk(ResultCode=True),
        with_stk(ResultCode=1.5),
        with_stk(ResultCode=-1),
        with_stk(ResultCode=10**30),
        with_stk(ResultCode="not a code"),
        with_stk(ResultCode="1" * 30),
        {"Body": {"stkCallback": _without(stk, "CheckoutRequestID")}},
        {"Body": {"stkCallback": _without(stk, "ResultDesc")}},
        with_stk(CheckoutRequestID=12345),
        {"Body": {"stkCallback": _without(stk, "CallbackMetadata")}},
        with_stk(CallbackMetadata={"Item": {"Name": "Amount", "Value": 100}}),
        with_stk(CallbackMetadata={"Item": ["Amount"]}),
        with_item("Amount", "one hundred"),
        with_item("Amount", True),
        with_item("MpesaReceiptNumber", "X" * 300),
        with_item("PhoneNumber", {"a": 1}),
    ]


def test_a_callback_without_darajas_shape_is_kept_and_marked_unparseable(
    platform, app, client, api, tenant, callback_token
):
    push = api.post(STKPUSHES, json=push_body("254700000099", amount=100)).get_json()
    malformed = _malformed_callbacks(push)

    responses = [post_callback(client, callback_token["value"], body) for body in malformed]

    assert [response.status_code for response in responses] == [200] * len(malformed)
    assert {json.dumps(response.get_json()) for response in responses} == {
        json.dumps({"ResultCode": 0, "ResultDesc": "Accepted"})
    }
    assert callback_outcomes(app, tenant.id, push["id"]) == ["unparseable"] * len(malformed)
    stored = stored_push(app, tenant.id, push["id"])
    assert (stored.status.value, stored.flagged_reason) == ("pending", None)


def test_reconciliation_settles_a_push_whose_callback_was_unparseable(
    platform, app, client, api, tenant, callback_token
):
    push = api.post(STKPUSHES, json=push_body("254700000099")).get_json()
    odd = daraja_callback(push)
    odd["Body"]["stkCallback"]["ResultCode"] = {"a": 1}  # once enough to mark a push failed
    post_callback(client, callback_token["value"], odd)
    threading.Event().wait(1.5)  # past the sandbox's decision and RECONCILE_AFTER_SECONDS

    with app.app_context():
        reconcile_pending_pushes()

    final = api.get(f"{STKPUSHES}/{push['id']}").get_json()
    assert (final["status"], final["result_code"]) == ("succeeded", "0")


@pytest.mark.parametrize(
    ("result_code", "status"), [("1032", "cancelled"), ("SFC_IC0003", "failed"), (1, "failed")]
)
def test_result_codes_daraja_sends_as_strings_or_numbers_are_applied(
    platform, client, api, callback_token, result_code, status
):
    push = api.post(STKPUSHES, json=push_body("254700000099")).get_json()

    post_callback(client, callback_token["value"], daraja_callback(push, result_code))

    final = api.get(f"{STKPUSHES}/{push['id']}").get_json()
    assert (final["status"], final["result_code"]) == (status, str(result_code))


def test_a_deeply_nested_callback_is_kept_and_marked_unparseable(
    platform, app, client, api, tenant, callback_token
):
    push = api.post(STKPUSHES, json=push_body("254700000099")).get_json()
    nested = b'{"Body": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"

    response = post_callback(client, callback_token["value"], nested)

    assert response.status_code == 200
    assert response.get_json() == {"ResultCode": 0, "ResultDesc": "Accepted"}
    assert callback_outcomes(app, tenant.id, push["id"]) == ["unparseable"]
    with app.app_context(), tenant_scope(tenant.id):
        kept = db.session.scalars(
            select(MpesaCallback.body).where(MpesaCallback.stk_push_id == push["id"])
        ).one()
    assert kept == nested.decode()


# --- why a push is held ------------------------------------------------------------------


def test_a_success_without_a_phone_number_is_held_and_says_why(
    platform, app, client, api, tenant, callback_token
):
    push = api.post(STKPUSHES, json=push_body("254700000099")).get_json()

    response = post_callback(
        client, callback_token["value"], daraja_callback(push, PhoneNumber=None)
    )

    assert response.status_code == 200
    held = api.get(f"{STKPUSHES}/{push['id']}").get_json()
    assert held["status"] == "pending"
    assert "PhoneNumber" in held["flagged_reason"]
    assert callback_outcomes(app, tenant.id, push["id"]) == ["mismatch"]
    [event] = flagged_events(app, tenant.id, push["id"])
    assert (event["status"], event["flagged_reason"]) == ("pending", held["flagged_reason"])


def test_a_held_push_keeps_its_reason_in_the_event_that_settles_it(
    platform, app, client, api, tenant, callback_token
):
    push = api.post(STKPUSHES, json=push_body("254700000099", amount=500)).get_json()
    post_callback(client, callback_token["value"], daraja_callback(push, Amount=1.0))
    threading.Event().wait(1.5)  # past the sandbox's decision and RECONCILE_AFTER_SECONDS

    with app.app_context():
        reconcile_pending_pushes()

    with app.app_context(), tenant_scope(tenant.id):
        settled = db.session.execute(
            text(
                "SELECT data->'object' FROM events WHERE type = 'payment.succeeded' "
                "AND data->'object'->>'id' = :id"
            ),
            {"id": push["id"]},
        ).scalar_one()
    assert settled["flagged_reason"] == "callback amount 1.0 differs from 500"


# --- MPESA_CALLBACK_ALLOWED_IPS ----------------------------------------------------------


@pytest.fixture
def safaricom_only(app):
    settings = app.extensions["lango.settings"]
    object.__setattr__(settings, "MPESA_CALLBACK_ALLOWED_IPS", ("196.201.214.0/24",))
    yield
    object.__setattr__(settings, "MPESA_CALLBACK_ALLOWED_IPS", ())


def test_a_live_callback_from_outside_the_allowed_networks_is_refused_and_kept(
    platform, app, client, api, tenant, callback_token, safaricom_only
):
    push = api.post(STKPUSHES, json=push_body("254700000099")).get_json()
    with app.app_context(), tenant_scope(tenant.id):
        db.session.execute(
            text("UPDATE stk_pushes SET livemode = true WHERE id = :id"), {"id": push["id"]}
        )
        db.session.commit()
    success = daraja_callback(push)

    forged = post_callback(
        client,
        callback_token["value"],
        success,
        headers={"X-Forwarded-For": "196.201.214.200"},  # not trusted: TRUSTED_PROXIES is 0 here
    )

    assert forged.status_code == 403
    assert forged.get_json()["error"]["code"] == "callback_source_refused"
    assert stored_push(app, tenant.id, push["id"]).status.value == "pending"
    assert callback_outcomes(app, tenant.id, push["id"]) == ["refused"]

    from_safaricom = post_callback(
        client, callback_token["value"], success, environ_base={"REMOTE_ADDR": "196.201.214.200"}
    )

    assert from_safaricom.status_code == 200
    assert stored_push(app, tenant.id, push["id"]).status.value == "succeeded"
    assert callback_outcomes(app, tenant.id, push["id"]) == ["refused", "applied"]


def test_test_mode_callbacks_from_the_sandbox_are_exempt_from_the_allow_list(
    platform, api, safaricom_only
):
    push_id = api.post(STKPUSHES, json=push_body("254708374149")).get_json()["id"]
    assert wait_for_status(api, push_id)["status"] == "succeeded"  # posted from 127.0.0.1
