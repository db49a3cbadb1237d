"""The quota on every push: exact under concurrency, released when a push never left."""

import pytest
from sqlalchemy import text

from core.extensions import db
from core.unit_of_work import unit_of_work
from tests.payments.test_stk_push import STKPUSHES, push_body
from tests.served import post_pushes_concurrently, quota_counted


def _cap_test_allowance(app, tenant_id, allowance, used):
    """Put the tenant on a plan allowing `allowance` test pushes, `used` of them spent."""
    with app.app_context():
        db.session.execute(
            text(
                "INSERT INTO public.plans (code, name, monthly_price, included_pushes, "
                "overage_price, rate_limit, max_webhook_endpoints, livemode_allowed, "
                "test_allowance, active, position) VALUES ('capped', 'Capped', 0, 0, NULL, "
                "'1000 per second', 1, false, :allowance, true, 99) "
                "ON CONFLICT (code) DO UPDATE SET test_allowance = :allowance"
            ),
            {"allowance": allowance},
        )
        period_start = db.session.execute(
            text(
                "UPDATE public.subscriptions SET plan_code = 'capped' WHERE tenant_id = :t "
                "RETURNING current_period_start"
            ),
            {"t": tenant_id},
        ).scalar()
        db.session.execute(
            text(
                "INSERT INTO public.usage_counters VALUES (:t, false, :p, :used) "
                "ON CONFLICT (tenant_id, livemode, period_start) DO UPDATE SET used = :used"
            ),
            {"t": tenant_id, "p": period_start, "used": used},
        )
        db.session.commit()


@pytest.fixture
def capped_plan(app):
    yield
    with app.app_context():
        db.session.execute(text("UPDATE public.subscriptions SET plan_code = 'sandbox'"))
        db.session.execute(text("DELETE FROM public.plans WHERE code = 'capped'"))
        db.session.commit()


def test_concurrent_pushes_never_exceed_the_hard_cap(platform, app, tenant, capped_plan, outbound):
    _cap_test_allowance(app, tenant.id, allowance=60, used=10)  # 50 left

    results = post_pushes_concurrently(platform, tenant.secret, [push_body() for _ in range(200)])

    statuses = sorted(status for status, _ in results)
    assert statuses.count(202) == 50
    assert statuses.count(402) == 150
    error = next(body["error"] for status, body in results if status == 402)
    assert error["code"] == "quota_exceeded" and error["type"] == "quota_error"
    assert (error["plan"], error["limit"]) == ("capped", 60)
    assert error["resets_at"].endswith("Z")
    counter, records, pushes = quota_counted(app, tenant.id)
    assert (counter, records, pushes) == (60, 50, 50)
    assert outbound.count("/mpesa/stkpush/v1/processrequest") == 50


@pytest.fixture
def without_velocity_rule(app):
    """The default fraud rule blocks a 5th push to one phone in 10 minutes; this test needs
    60 pushes to the sandbox's one refusing number to reach Daraja."""
    from compliance.fraud import invalidate_rules

    def toggle(enabled: bool) -> None:
        with app.app_context():
            db.session.execute(
                text(
                    "UPDATE public.fraud_rules SET enabled = :on "
                    "WHERE id = 'frule_phone_velocity_10m'"
                ),
                {"on": enabled},
            )
            db.session.commit()
        invalidate_rules()

    toggle(False)
    yield
    toggle(True)


def test_pushes_daraja_refuses_are_released(
    platform, app, tenant, capped_plan, without_velocity_rule
):
    _cap_test_allowance(app, tenant.id, allowance=50, used=0)
    refused = [push_body("254700001001") for _ in range(60)]

    results = post_pushes_concurrently(platform, tenant.secret, refused)

    assert {status for status, _ in results} <= {502, 402}
    counter, records, _ = quota_counted(app, tenant.id)
    assert (counter, records) == (0, 0)
    # The allowance is whole again: 50 good pushes still go through.
    accepted = post_pushes_concurrently(platform, tenant.secret, [push_body() for _ in range(50)])
    assert [status for status, _ in accepted].count(202) == 50


def test_idempotent_replays_never_add_usage(platform, app, api, tenant):
    body = push_body()
    for _ in range(5):
        assert (
            api.post(STKPUSHES, json=body, headers={"Idempotency-Key": "once"}).status_code == 202
        )
    counter, records, pushes = quota_counted(app, tenant.id)
    assert (counter, records, pushes) == (1, 1, 1)


def test_sandbox_plan_refuses_live_pushes(platform, app, client, tenant):
    from payments.credentials import save_credentials
    from tenants.service import create_api_key, get_tenant
    from tests.conftest import ApiClient

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
        live_secret = create_api_key(tenant.id, livemode=True, name="live").secret

    response = ApiClient(client, live_secret).post(STKPUSHES, json=push_body())

    assert response.status_code == 403
    assert response.get_json()["error"]["code"] == "livemode_not_enabled"
    assert response.get_json()["error"]["plan"] == "sandbox"


def test_a_released_push_that_is_paid_later_is_counted_again_past_the_cap(
    platform, app, client, api, tenant, capped_plan, monkeypatch
):
    from payments import service
    from tests.payments.test_stk_push import (
        daraja_callback,
        expire_unacknowledged,
        post_callback,
    )

    _cap_test_allowance(app, tenant.id, allowance=1, used=0)
    tokens = []
    original = service.callback_token

    def remember(tenant_id):  # the callback URL's token, to post M-Pesa's late answer
        tokens.append(original(tenant_id))
        return tokens[-1]

    monkeypatch.setattr(service, "callback_token", remember)
    push = api.post(STKPUSHES, json=push_body("254700000099")).get_json()
    expire_unacknowledged(app, tenant.id, push["id"])
    assert quota_counted(app, tenant.id)[:2] == (0, 0)
    assert api.post(STKPUSHES, json=push_body()).status_code == 202  # the unit it freed

    post_callback(client, tokens[0], daraja_callback(push))

    assert api.get(f"{STKPUSHES}/{push['id']}").get_json()["status"] == "succeeded"
    assert quota_counted(app, tenant.id)[:2] == (2, 2)  # paid: counted, cap or not
