import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

from sqlalchemy import text

from core.extensions import db
from core.unit_of_work import unit_of_work
from tests.conftest import ApiClient


def _auth(secret):
    return {"Authorization": f"Bearer {secret}"}


def test_created_key_is_shown_once_and_works(api, client):
    created = api.post("/v1/api-keys", json={"mode": "test", "name": "CI"})

    assert created.status_code == 201
    key = created.get_json()
    assert key["secret"].startswith("sk_test_") and key["name"] == "CI"
    assert client.get("/v1/tenant", headers=_auth(key["secret"])).status_code == 200
    listed = api.get("/v1/api-keys").get_json()
    assert listed["object"] == "list"
    assert {item["id"] for item in listed["data"]} >= {key["id"]}
    assert all("secret" not in item for item in listed["data"])


def test_listing_records_last_use(api, tenant):
    api.get("/v1/tenant")
    listed = api.get("/v1/api-keys").get_json()["data"]
    mine = next(item for item in listed if item["id"] == tenant.key_id)
    assert mine["last_used"] is not None and mine["last_used"].endswith("Z")


def test_revoked_key_is_refused_at_once(api, client, tenant):
    other = api.post("/v1/api-keys", json={"mode": "test", "name": "temp"}).get_json()

    revoked = api.delete(f"/v1/api-keys/{other['id']}")

    assert revoked.status_code == 200
    refused = client.get("/v1/tenant", headers=_auth(other["secret"]))
    assert refused.status_code == 401
    assert refused.get_json()["error"]["code"] == "api_key_invalid"
    assert other["id"] not in {k["id"] for k in api.get("/v1/api-keys").get_json()["data"]}


def test_roll_without_grace_replaces_the_key_immediately(api, client, tenant):
    rolled = api.post(f"/v1/api-keys/{tenant.key_id}/roll", json={})

    assert rolled.status_code == 201
    new_secret = rolled.get_json()["secret"]
    assert new_secret != tenant.secret
    assert client.get("/v1/tenant", headers=_auth(tenant.secret)).status_code == 401
    assert client.get("/v1/tenant", headers=_auth(new_secret)).status_code == 200


def test_roll_with_grace_keeps_the_old_key_until_it_expires(app, api, client, tenant):
    rolled = api.post(f"/v1/api-keys/{tenant.key_id}/roll", json={"grace_period_seconds": 3600})
    assert rolled.status_code == 201

    assert client.get("/v1/tenant", headers=_auth(tenant.secret)).status_code == 200
    with app.app_context():
        expires = db.session.execute(
            text("SELECT expires_at FROM public.api_keys WHERE id = :id"), {"id": tenant.key_id}
        ).scalar()
        assert timedelta(minutes=59) < expires - datetime.now(UTC) <= timedelta(hours=1)
        # Time passes: the grace period ends.
        db.session.execute(
            text(
                "UPDATE public.api_keys SET expires_at = now() - interval '1 second' WHERE id = :id"
            ),
            {"id": tenant.key_id},
        )
        db.session.commit()
    assert client.get("/v1/tenant", headers=_auth(tenant.secret)).status_code == 401


def test_roll_grace_is_capped_at_24_hours(api, tenant):
    response = api.post(f"/v1/api-keys/{tenant.key_id}/roll", json={"grace_period_seconds": 86401})
    assert response.status_code == 400
    assert response.get_json()["error"]["param"] == "grace_period_seconds"


def test_test_key_cannot_mint_or_see_live_keys(app, api, tenant):
    refused = api.post("/v1/api-keys", json={"mode": "live", "name": "prod"})
    assert refused.status_code == 403
    assert refused.get_json()["error"]["code"] == "mode_mismatch"

    from tenants.service import create_api_key

    with app.app_context(), unit_of_work():
        live = create_api_key(tenant.id, livemode=True, name="prod")
        live_secret, live_id = live.secret, live.key.id
    assert live_id not in {k["id"] for k in api.get("/v1/api-keys").get_json()["data"]}
    assert api.delete(f"/v1/api-keys/{live_id}").status_code == 404
    live_view = api.client.get("/v1/api-keys", headers=_auth(live_secret)).get_json()
    assert {k["livemode"] for k in live_view["data"]} == {True}


def test_another_tenants_key_is_invisible(client, tenant_factory):
    alpha, beta = tenant_factory("Alpha Ltd"), tenant_factory("Beta Ltd")
    alpha_api = ApiClient(client, alpha.secret)

    assert alpha_api.delete(f"/v1/api-keys/{beta.key_id}").status_code == 404
    assert alpha_api.post(f"/v1/api-keys/{beta.key_id}/roll", json={}).status_code == 404
    assert beta.key_id not in {k["id"] for k in alpha_api.get("/v1/api-keys").get_json()["data"]}
    assert client.get("/v1/tenant", headers=_auth(beta.secret)).status_code == 200


def test_suspended_tenant_keys_get_403(app, api, tenant):
    with app.app_context():
        db.session.execute(
            text("UPDATE public.tenants SET status = 'suspended' WHERE id = :id"), {"id": tenant.id}
        )
        db.session.commit()

    response = api.get("/v1/tenant")

    assert response.status_code == 403
    assert response.get_json()["error"]["code"] == "tenant_suspended"


def test_key_list_paginates_newest_first(api):
    ids = [
        api.post("/v1/api-keys", json={"mode": "test", "name": f"k{i}"}).get_json()["id"]
        for i in range(4)
    ]
    first = api.get("/v1/api-keys?limit=2").get_json()
    assert [k["id"] for k in first["data"]] == ids[::-1][:2] and first["has_more"] is True
    second = api.get(f"/v1/api-keys?limit=2&starting_after={first['data'][-1]['id']}").get_json()
    assert [k["id"] for k in second["data"]] == ids[::-1][2:4]
    back = api.get(f"/v1/api-keys?limit=2&ending_before={second['data'][0]['id']}").get_json()
    assert [k["id"] for k in back["data"]] == [k["id"] for k in first["data"]]
    both = api.get("/v1/api-keys?starting_after=a&ending_before=b")
    assert both.status_code == 400


def test_api_key_limits_count_per_key(app, api, tenant):
    """Requests over the per-key limit get 429 with the limit headers."""
    from core.extensions import limiter

    responses = [api.get("/v1/tenant") for _ in range(3)]
    assert all(r.status_code == 200 for r in responses)
    assert "X-RateLimit-Limit" in responses[-1].headers
    remaining = [int(r.headers["X-RateLimit-Remaining"]) for r in responses]
    assert remaining == sorted(remaining, reverse=True) and remaining[0] > remaining[-1]
    limiter.reset()


def _mint(app, tenant_id, count, *, livemode=False):
    from tenants.service import create_api_key

    with app.app_context(), unit_of_work():
        return [create_api_key(tenant_id, livemode=livemode, name=f"k{n}") for n in range(count)]


def test_a_tenant_holds_at_most_twenty_active_keys_per_mode(app, api, tenant):
    _mint(app, tenant.id, 19)  # with the sign-up's key: 20

    refused = api.post("/v1/api-keys", json={"mode": "test", "name": "one more"})

    assert refused.status_code == 409
    error = refused.get_json()["error"]
    assert (error["type"], error["code"]) == ("invalid_request_error", "api_key_limit_reached")
    assert "20" in error["message"]
    keys = api.get("/v1/api-keys?limit=100").get_json()["data"]
    assert len(keys) == 20
    # Revoking one makes room again.
    assert api.delete(f"/v1/api-keys/{keys[0]['id']}").status_code == 200
    assert api.post("/v1/api-keys", json={"mode": "test", "name": "now"}).status_code == 201


def test_the_key_cap_holds_under_concurrent_creation(app, tenant):
    from tenants.service import ApiKeyLimitReached, create_api_key

    _mint(app, tenant.id, 15)
    barrier = threading.Barrier(8)

    def create(n):
        with app.app_context():
            barrier.wait()
            try:
                with unit_of_work():
                    create_api_key(tenant.id, livemode=False, name=f"race{n}")
                return "created"
            except ApiKeyLimitReached:
                return "refused"

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(create, range(8)))

    assert sorted(outcomes) == ["created"] * 4 + ["refused"] * 4
    with app.app_context():
        active = db.session.execute(
            text("SELECT count(*) FROM public.api_keys WHERE tenant_id = :t AND NOT livemode"),
            {"t": tenant.id},
        ).scalar()
    assert active == 20


def test_the_key_cap_counts_each_mode_apart(app, tenant):
    _mint(app, tenant.id, 19)

    assert len(_mint(app, tenant.id, 20, livemode=True)) == 20


def test_at_the_cap_a_roll_needs_no_grace(api, app, tenant):
    _mint(app, tenant.id, 19)

    with_grace = api.post(f"/v1/api-keys/{tenant.key_id}/roll", json={"grace_period_seconds": 60})
    without = api.post(f"/v1/api-keys/{tenant.key_id}/roll", json={})

    # With a grace period the old key stays active beside the new one: a 21st key.
    assert with_grace.status_code == 409
    assert with_grace.get_json()["error"]["code"] == "api_key_limit_reached"
    assert without.status_code == 201


def test_expired_keys_leave_room_under_the_cap(app, tenant):
    _mint(app, tenant.id, 19)
    with app.app_context():
        db.session.execute(
            text(
                "UPDATE public.api_keys SET expires_at = now() - interval '1 second' WHERE id = :id"
            ),
            {"id": tenant.key_id},
        )
        db.session.commit()

    issued = _mint(app, tenant.id, 1)

    assert len(issued) == 1
