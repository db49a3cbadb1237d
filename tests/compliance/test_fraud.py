"""Fraud screening: default rules under concurrency, review cases, editable rules,
blocklists. Real PostgreSQL, Redis, Lango and the Daraja sandbox."""

import json
import time

import pytest
import requests
import rule_engine
from sqlalchemy import text

from compliance import fraud
from core.events import EventType, record_event
from core.extensions import db
from core.outbox import dispatch
from core.unit_of_work import tenant_unit_of_work
from tests.payments.test_stk_push import push_body, random_phone
from tests.served import post_pushes_concurrently, quota_counted, wait_for_status

STKPUSHES = "/v1/stk-pushes"
PROCESS_REQUEST = "/mpesa/stkpush/v1/processrequest"
VELOCITY_RULE = "frule_phone_velocity_10m"


@pytest.fixture
def restore_rules(app):
    """Tests that edit public.fraud_rules put the seeded set back afterwards."""
    with app.app_context():
        saved = [
            dict(row)
            for row in db.session.execute(text("SELECT * FROM public.fraud_rules")).mappings()
        ]
        db.session.rollback()
    yield
    with app.app_context():
        db.session.execute(text("DELETE FROM public.fraud_rules"))
        for row in saved:
            columns = ", ".join(row)
            values = ", ".join(f":{column}" for column in row)
            db.session.execute(
                text(f"INSERT INTO public.fraud_rules ({columns}) VALUES ({values})"), row
            )
        db.session.commit()
    fraud.invalidate_rules()


def review_cases(app, tenant_id):
    with app.app_context():
        rows = db.session.execute(
            text(
                "SELECT stk_push_id, rule_id, status FROM public.fraud_review_cases "
                "WHERE tenant_id = :t"
            ),
            {"t": tenant_id},
        ).all()
        db.session.rollback()
    return [tuple(row) for row in rows]


def test_twenty_parallel_pushes_to_one_phone_let_exactly_four_through(
    platform, app, tenant, outbound
):
    # phone_pushes_10m counts the push being screened: pushes 1-4 see 1..4 and pass, the
    # fifth and later see >= 5 and are blocked.
    results = post_pushes_concurrently(
        platform, tenant.secret, [push_body(random_phone_fixed := random_phone())] * 20
    )
    del random_phone_fixed

    blocked = [body["error"] for status, body in results if status == 403]
    assert len(blocked) == 16
    assert {(e["code"], e["rule_id"], e["blocked_by"]) for e in blocked} == {
        ("fraud_blocked", VELOCITY_RULE, "rule")
    }
    assert all("phone_pushes_10m" not in json.dumps(body) for _, body in results)
    # The four that passed screening reached Daraja (the sandbox may refuse some as the
    # subscriber is locked by a prompt in flight: 502, released).
    assert sorted({status for status, _ in results} - {403}) <= [202, 502]
    assert outbound.count(PROCESS_REQUEST) == 4
    counter, records, pushes = quota_counted(app, tenant.id)
    accepted = sum(1 for status, _ in results if status == 202)
    assert pushes == 4  # blocked pushes leave no row …
    assert counter == records == accepted  # … and no quota used


def test_blocked_push_uses_no_quota(platform, app, api, tenant):
    phone = random_phone()
    for _ in range(4):
        wait_for_status(api, api.post(STKPUSHES, json=push_body(phone)).get_json()["id"])
    before = quota_counted(app, tenant.id)

    refused = api.post(STKPUSHES, json=push_body(phone))

    assert refused.status_code == 403
    error = refused.get_json()["error"]
    assert (error["code"], error["rule_id"]) == ("fraud_blocked", VELOCITY_RULE)
    assert "phone_pushes_10m" not in refused.get_data(as_text=True)
    assert quota_counted(app, tenant.id) == before == (4, 4, 4)


def test_large_amount_on_a_new_tenant_opens_a_review_case_and_proceeds(platform, app, api, tenant):
    created = api.post(STKPUSHES, json=push_body("254708374149", amount=60_000))

    assert created.status_code == 202, created.get_json()
    push_id = created.get_json()["id"]
    assert review_cases(app, tenant.id) == [(push_id, "frule_new_tenant_large_amount", "open")]
    assert wait_for_status(api, push_id)["status"] == "succeeded"
    small = api.post(STKPUSHES, json=push_body(amount=50_000))
    assert small.status_code == 202
    assert len(review_cases(app, tenant.id)) == 1


def test_cancellations_feed_the_review_rule(platform, app, api, tenant):
    cancelling = "254700001032"  # the sandbox's customer-cancels number
    for _ in range(3):
        push = api.post(STKPUSHES, json=push_body(cancelling)).get_json()
        assert wait_for_status(api, push["id"])["status"] == "cancelled"
    # The counter is an outbox subscriber of payment.cancelled: hand it the events.
    with app.app_context():
        dispatch(tenant.id)
    assert review_cases(app, tenant.id) == []

    fourth = api.post(STKPUSHES, json=push_body(cancelling))

    assert fourth.status_code == 202
    assert review_cases(app, tenant.id) == [
        (fourth.get_json()["id"], "frule_phone_cancellations_1h", "open")
    ]


def test_a_rule_edited_in_the_table_applies_to_the_next_push(
    platform, app, api, tenant, restore_rules
):
    assert api.post(STKPUSHES, json=push_body(amount=777)).status_code == 202
    with app.app_context():
        db.session.execute(
            text(
                "UPDATE public.fraud_rules SET expression = 'amount == 777 or "
                "phone_pushes_10m >= 5', updated_at = now() WHERE id = :id"
            ),
            {"id": VELOCITY_RULE},
        )
        db.session.commit()
    time.sleep(fraud.RULES_CACHE_SECONDS + 0.1)  # no deploy, no explicit invalidation

    refused = api.post(STKPUSHES, json=push_body(amount=777))

    assert refused.status_code == 403
    assert refused.get_json()["error"]["rule_id"] == VELOCITY_RULE
    assert "777" not in refused.get_data(as_text=True)
    assert api.post(STKPUSHES, json=push_body(amount=778)).status_code == 202


def test_blocklisted_phone_is_blocked_for_that_tenant_only(
    platform, app, api, tenant, tenant_factory
):
    phone = random_phone()
    with app.app_context():
        db.session.add(fraud.BlockedPhone(tenant_id=tenant.id, phone=phone, reason="chargebacks"))
        db.session.commit()

    refused = api.post(STKPUSHES, json=push_body(phone))

    assert refused.status_code == 403
    error = refused.get_json()["error"]
    assert (error["code"], error["blocked_by"], error["rule_id"]) == (
        "fraud_blocked",
        "blocklist",
        None,
    )
    assert "chargebacks" not in refused.get_data(as_text=True)
    assert quota_counted(app, tenant.id) == (0, 0, 0)
    other = tenant_factory("Other Duka")
    assert (
        requests.post(
            f"{platform.url}{STKPUSHES}",
            json=push_body(phone),
            headers={"Authorization": f"Bearer {other.secret}"},
            timeout=30,
        ).status_code
        == 202
    )


def test_first_matching_rule_wins_and_broken_rules_are_skipped():
    def rule(rule_id, expression, outcome):
        return fraud.CompiledRule(
            rule_id, fraud.Outcome(outcome), fraud.compile_expression(expression)
        )

    rules = (
        rule("r_review", "amount > 100", "review"),
        rule("r_block", "amount > 10", "block"),
    )
    assert fraud.decide(rules, {"amount": 500}) == fraud.Decision(fraud.Outcome.REVIEW, "r_review")
    assert fraud.decide(rules, {"amount": 50}) == fraud.Decision(fraud.Outcome.BLOCK, "r_block")
    assert fraud.decide(rules, {"amount": 5}) == fraud.Decision(fraud.Outcome.ALLOW)
    with pytest.raises(rule_engine.SymbolResolutionError):
        fraud.compile_expression("no_such_attribute > 1")


def test_screening_latency(app, tenant):
    """Prints p50/p99 of screen() with the default rules (not asserted)."""
    push = fraud.ScreenedPush(phone="254711000000", amount=100, livemode=False)
    timings = []
    with app.app_context():
        for n in range(500):
            push = fraud.ScreenedPush(phone=f"2547110{n:05d}", amount=100, livemode=False)
            started = time.perf_counter()
            fraud.screen(tenant.id, push)
            timings.append((time.perf_counter() - started) * 1000)
        db.session.rollback()
    timings.sort()
    print(f"\nscreen(): p50 {timings[250]:.2f} ms, p99 {timings[494]:.2f} ms over 500 calls")


def test_a_cancelled_push_event_feeds_the_cancellation_counter_once(app, tenant):
    phone = random_phone()
    cancelled = {"id": "stk_cancelled", "phone_number": phone, "livemode": False}
    with app.app_context():
        with tenant_unit_of_work(tenant.id):
            record_event(
                EventType.PAYMENT_CANCELLED,
                {"object": {**cancelled, "status": "cancelled"}},
                livemode=False,
            )
        dispatch(tenant.id)
        dispatch(tenant.id)  # handled once, as recorded in the database
        redis = app.extensions["lango.redis"]
        assert redis.zrange(f"fraud:test:phone:{phone}:cancels", 0, -1) == [b"stk_cancelled"]
        assert redis.zrange(f"fraud:live:phone:{phone}:cancels", 0, -1) == []
