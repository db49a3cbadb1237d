"""Every failure, whatever raised it (Flask routing, webargs, a service, an unexpected bug),
answers JSON in the one documented shape:

    {"error": {"type", "code", "message", "request_id", "param"?, "errors"?}}

with the request id of its `Request-Id` header."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from sqlalchemy import text

from core.extensions import db
from core.logs import RequestIdFilter
from tests.conftest import ApiClient

REQUIRED_KEYS = {"type", "code", "message", "request_id"}
OPTIONAL_KEYS = {"param", "errors"}
SIGNUP = {
    "business_name": "Mama Mboga Ltd",
    "email": "owner@example.co.ke",
    "password": "s3cure-Passw0rd",
}
ONE_MIB = 1024 * 1024
BOOM = "database password is hunter2"


@dataclass
class World:
    """What a scenario may use to provoke its error."""

    app: object
    client: object
    tenant_factory: Callable
    monkeypatch: pytest.MonkeyPatch

    def api(self, tenant=None) -> ApiClient:
        return ApiClient(self.client, (tenant or self.tenant_factory()).secret)

    def sql(self, statement: str, **params) -> None:
        with self.app.app_context():
            db.session.execute(text(statement), params)
            db.session.commit()


def _bearer(secret: str) -> dict:
    return {"Authorization": f"Bearer {secret}"}


# --- Scenarios: each sends the request that should fail. ---------------------------------


def unknown_route(w):
    return w.client.get("/v1/no-such-thing")


def unknown_api_route_asked_for_html(w):
    # API paths answer JSON whoever asks; other paths give browsers the product's 404 page
    # (tests/frontend/test_pages_core.py).
    return w.client.get("/v1/no-such-thing", headers={"Accept": "text/html"})


def missing_docs_asset(w):
    return w.client.get("/docs/assets/no-such-file.js")


def doubled_slash_in_path(w):
    # Werkzeug would answer a 308 redirect with an HTML page.
    return w.api().get("/v1//tenant")


def wrong_method(w):
    return w.client.put("/v1/signup", json=SIGNUP)


def form_encoded_body(w):
    return w.client.post("/v1/signup", data=SIGNUP)


def text_body(w):
    return w.client.post("/v1/signup", data="hello", content_type="text/plain")


def malformed_json(w):
    return w.client.post("/v1/signup", data='{"business_name": ', content_type="application/json")


def json_not_utf8(w):
    return w.client.post("/v1/signup", data=b'{"email": "\xff"}', content_type="application/json")


def deeply_nested_json(w):
    return w.client.post("/v1/signup", data="[" * 100_000, content_type="application/json")


def json_list_instead_of_object(w):
    return w.client.post("/v1/signup", json=[SIGNUP])


def unknown_field(w):
    return w.client.post("/v1/signup", json={**SIGNUP, "nickname": "Mama"})


def missing_fields(w):
    return w.client.post("/v1/signup", json={})


def invalid_field(w):
    return w.client.post("/v1/signup", json={**SIGNUP, "email": "not-an-email"})


def invalid_query_parameter(w):
    return w.api().get("/v1/api-keys?limit=0")


def nul_character_in_a_field(w):
    # PostgreSQL cannot store NUL in text: refused by name, never a 500 from the database.
    return w.client.post("/v1/signup", json={**SIGNUP, "business_name": "Mama\u0000Mboga"})


def nul_character_in_a_metadata_key(w):
    push = {"phone_number": "0708374149", "amount": 10, "metadata": {"order\u0000": "1"}}
    return w.api().post("/v1/stk-pushes", json=push)


def nul_character_in_the_query(w):
    return w.api().get("/v1/stk-pushes?phone_number=0708\u0000374149")


def nul_character_in_an_idempotency_key(w):
    push = {"phone_number": "0708374149", "amount": 10, "account_reference": "INV1"}
    return w.api().post("/v1/stk-pushes", json=push, headers={"Idempotency-Key": "order-1\u0000"})


def url_over_4_kib(w):
    # gunicorn would answer its own HTML 414 (tests/core/test_schemathesis.py serves through it).
    return w.api().get("/v1/stk-pushes?phone_number=" + "7" * 5000)


def unknown_route_with_an_over_long_url(w):
    return w.client.get("/v1/no-such-thing/" + "x" * 5000)


def missing_body_where_the_document_requires_one(w):
    # Read as {} it was a silent no-op; the document says the body is required.
    return w.client.patch(
        "/v1/webhook-endpoints/we_missing", headers=_bearer(w.tenant_factory().secret)
    )


def boolean_sent_as_a_number(w):
    return w.api().post(
        "/v1/webhook-endpoints", json={"url": "https://example.co.ke/hook", "enabled": 0}
    )


def boolean_sent_as_a_word(w):
    return w.api().post("/v1/subscription", json={"cancel_at_period_end": "yes"})


def integer_beyond_postgresql_range(w):
    return w.api().post("/v1/subscription", json={"overage_spending_cap": 10**20})


def integer_sent_as_a_float_beyond_postgresql_range(w):
    return w.api().post(
        "/v1/subscription",
        data='{"overage_spending_cap": 1.5e20}',
        content_type="application/json",
    )


def integer_sent_as_a_string(w):
    return w.api().post(
        f"/v1/api-keys/{w.tenant_factory().key_id}/roll", json={"grace_period_seconds": "60"}
    )


def no_authorization_header(w):
    return w.client.get("/v1/tenant")


def not_a_bearer_token(w):
    return w.client.get("/v1/tenant", headers={"Authorization": "Basic dXNlcjpwYXNz"})


def malformed_key(w):
    return w.client.get("/v1/tenant", headers=_bearer("pk_test_123"))


def unknown_key(w):
    return w.client.get("/v1/tenant", headers=_bearer("sk_test_" + "x" * 32))


def revoked_key(w):
    api = w.api()
    spare = api.post("/v1/api-keys", json={"mode": "test", "name": "spare"}).get_json()
    assert api.delete(f"/v1/api-keys/{spare['id']}").status_code == 200
    return w.client.get("/v1/tenant", headers=_bearer(spare["secret"]))


def rolled_key_after_grace_period(w):
    tenant = w.tenant_factory()
    rolled = w.api(tenant).post(
        f"/v1/api-keys/{tenant.key_id}/roll", json={"grace_period_seconds": 60}
    )
    assert rolled.status_code == 201
    w.sql(
        "UPDATE public.api_keys SET expires_at = now() - interval '1 second' WHERE id = :id",
        id=tenant.key_id,
    )
    return w.client.get("/v1/tenant", headers=_bearer(tenant.secret))


def suspended_tenant(w):
    tenant = w.tenant_factory()
    w.sql("UPDATE public.tenants SET status = 'suspended' WHERE id = :id", id=tenant.id)
    return w.api(tenant).get("/v1/tenant")


def live_key_from_a_test_key(w):
    return w.api().post("/v1/api-keys", json={"mode": "live", "name": "prod"})


def other_tenants_key(w):
    alpha, beta = w.tenant_factory("Alpha Ltd"), w.tenant_factory("Beta Ltd")
    return w.api(alpha).delete(f"/v1/api-keys/{beta.key_id}")


def duplicate_signup_email(w):
    assert w.client.post("/v1/signup", json=SIGNUP).status_code == 201
    return w.client.post("/v1/signup", json={**SIGNUP, "email": "OWNER@example.co.ke"})


def rate_limited_signup(w):
    settings = w.app.extensions["lango.settings"]
    previous = settings.RATELIMIT_SIGNUP
    object.__setattr__(settings, "RATELIMIT_SIGNUP", "1 per hour")
    try:
        w.client.post("/v1/signup", json={})
        return w.client.post("/v1/signup", json={})
    finally:
        object.__setattr__(settings, "RATELIMIT_SIGNUP", previous)


def body_over_one_mib(w):
    body = json.dumps({**SIGNUP, "business_name": "x" * ONE_MIB})
    return w.client.post("/v1/signup", data=body, content_type="application/json")


def exception_inside_a_view(w):
    import tenants.service

    def broken(tenant_id):
        raise RuntimeError(BOOM)

    w.monkeypatch.setattr(tenants.service, "get_tenant", broken)
    return w.api().get("/v1/tenant")


def _allows(*methods):
    def check(response):
        allowed = {m.strip() for m in response.headers["Allow"].split(",")}
        assert set(methods) <= allowed

    return check


def _retry_after(response):
    assert int(response.headers["Retry-After"]) > 0
    assert response.headers["X-RateLimit-Remaining"] == "0"


@dataclass(frozen=True)
class Expected:
    status: int
    type: str
    code: str
    param: str | None = None
    errors: frozenset[str] | None = None
    check: Callable | None = None


INVALID = "invalid_request_error"
AUTH = "authentication_error"
PERMISSION = "permission_error"
SIGNUP_FIELDS = frozenset({"business_name", "email", "password"})

CASES = [
    (unknown_route, Expected(404, INVALID, "resource_missing")),
    (unknown_api_route_asked_for_html, Expected(404, INVALID, "resource_missing")),
    (missing_docs_asset, Expected(404, INVALID, "resource_missing")),
    (doubled_slash_in_path, Expected(404, INVALID, "resource_missing")),
    (wrong_method, Expected(405, INVALID, "method_not_allowed", check=_allows("POST"))),
    (form_encoded_body, Expected(400, INVALID, "invalid_json")),
    (text_body, Expected(400, INVALID, "invalid_json")),
    (malformed_json, Expected(400, INVALID, "invalid_json")),
    (json_not_utf8, Expected(400, INVALID, "invalid_json")),
    (deeply_nested_json, Expected(400, INVALID, "invalid_json")),
    (
        json_list_instead_of_object,
        Expected(400, INVALID, "parameter_invalid", errors=frozenset({"_schema"})),
    ),
    (
        unknown_field,
        Expected(400, INVALID, "parameter_invalid", "nickname", frozenset({"nickname"})),
    ),
    (missing_fields, Expected(400, INVALID, "parameter_missing", "business_name", SIGNUP_FIELDS)),
    (invalid_field, Expected(400, INVALID, "parameter_invalid", "email", frozenset({"email"}))),
    (
        invalid_query_parameter,
        Expected(400, INVALID, "parameter_invalid", "limit", frozenset({"limit"})),
    ),
    (
        nul_character_in_a_field,
        Expected(400, INVALID, "parameter_invalid", "business_name", frozenset({"business_name"})),
    ),
    (
        nul_character_in_a_metadata_key,
        Expected(
            400,
            INVALID,
            "parameter_invalid",
            "metadata.order\\u0000",
            frozenset({"metadata.order\\u0000"}),
        ),
    ),
    (
        nul_character_in_the_query,
        Expected(400, INVALID, "parameter_invalid", "phone_number", frozenset({"phone_number"})),
    ),
    (
        nul_character_in_an_idempotency_key,
        Expected(400, INVALID, "parameter_invalid", "Idempotency-Key"),
    ),
    (url_over_4_kib, Expected(414, INVALID, "uri_too_long")),
    (unknown_route_with_an_over_long_url, Expected(414, INVALID, "uri_too_long")),
    (missing_body_where_the_document_requires_one, Expected(400, INVALID, "parameter_missing")),
    (
        boolean_sent_as_a_number,
        Expected(400, INVALID, "parameter_invalid", "enabled", frozenset({"enabled"})),
    ),
    (
        boolean_sent_as_a_word,
        Expected(
            400,
            INVALID,
            "parameter_invalid",
            "cancel_at_period_end",
            frozenset({"cancel_at_period_end"}),
        ),
    ),
    (
        integer_beyond_postgresql_range,
        Expected(
            400,
            INVALID,
            "parameter_invalid",
            "overage_spending_cap",
            frozenset({"overage_spending_cap"}),
        ),
    ),
    (
        integer_sent_as_a_float_beyond_postgresql_range,
        Expected(
            400,
            INVALID,
            "parameter_invalid",
            "overage_spending_cap",
            frozenset({"overage_spending_cap"}),
        ),
    ),
    (
        integer_sent_as_a_string,
        Expected(
            400,
            INVALID,
            "parameter_invalid",
            "grace_period_seconds",
            frozenset({"grace_period_seconds"}),
        ),
    ),
    (no_authorization_header, Expected(401, AUTH, "api_key_missing")),
    (not_a_bearer_token, Expected(401, AUTH, "api_key_missing")),
    (malformed_key, Expected(401, AUTH, "api_key_invalid")),
    (unknown_key, Expected(401, AUTH, "api_key_invalid")),
    (revoked_key, Expected(401, AUTH, "api_key_invalid")),
    (rolled_key_after_grace_period, Expected(401, AUTH, "api_key_invalid")),
    (suspended_tenant, Expected(403, PERMISSION, "tenant_suspended")),
    (live_key_from_a_test_key, Expected(403, PERMISSION, "mode_mismatch", "mode")),
    (other_tenants_key, Expected(404, INVALID, "resource_missing", "id")),
    (duplicate_signup_email, Expected(409, INVALID, "email_taken", "email")),
    (rate_limited_signup, Expected(429, "rate_limit_error", "rate_limited", check=_retry_after)),
    (body_over_one_mib, Expected(413, INVALID, "body_too_large")),
    (exception_inside_a_view, Expected(500, "api_error", "internal_error")),
]


@pytest.fixture
def world(app, client, tenant_factory, monkeypatch) -> World:
    return World(app, client, tenant_factory, monkeypatch)


@pytest.mark.parametrize(
    ("scenario", "expected"), [pytest.param(*case, id=case[0].__name__) for case in CASES]
)
def test_every_error_answers_json_in_the_one_documented_shape(world, scenario, expected):
    response = scenario(world)

    assert response.status_code == expected.status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert set(body) == {"error"}
    error = body["error"]
    assert REQUIRED_KEYS <= set(error) <= REQUIRED_KEYS | OPTIONAL_KEYS
    assert (error["type"], error["code"]) == (expected.type, expected.code)
    assert isinstance(error["message"], str) and error["message"]
    assert error["request_id"].startswith("req_")
    assert error["request_id"] == response.headers["Request-Id"]
    assert error.get("param") == expected.param
    if expected.errors is None:
        assert "errors" not in error
    else:
        assert set(error["errors"]) == expected.errors
        assert all(error["errors"].values())
    if expected.check:
        expected.check(response)


@pytest.fixture
def app_log(app):
    """What the app's own log handler writes (JSON lines), captured for one test."""
    handler = next(
        handler
        for handler in logging.getLogger().handlers
        if any(isinstance(f, RequestIdFilter) for f in handler.filters)
    )
    buffer = io.StringIO()
    previous = handler.setStream(buffer)
    yield buffer
    handler.setStream(previous)


def test_unexpected_exception_is_logged_with_its_request_id_but_not_shown(world, app_log):
    response = exception_inside_a_view(world)

    assert response.status_code == 500
    shown = response.get_data(as_text=True)
    assert BOOM not in shown and "Traceback" not in shown and "RuntimeError" not in shown
    request_id = response.get_json()["error"]["request_id"]
    logged = [json.loads(line) for line in app_log.getvalue().splitlines()]
    errors = [entry for entry in logged if entry["level"] == "ERROR"]
    assert len(errors) == 1
    assert errors[0]["request_id"] == request_id
    assert errors[0]["error_class"] == "RuntimeError"
    assert BOOM in errors[0]["exc_info"]


def test_missing_fields_are_all_named_with_the_required_message(client):
    error = client.post("/v1/signup", json={"email": SIGNUP["email"]}).get_json()["error"]

    assert error["code"] == "parameter_missing"
    assert error["errors"] == {
        "business_name": ["Missing data for required field."],
        "password": ["Missing data for required field."],
    }


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("monthly_price", 10**20),
        ("monthly_price", 2**53),
        ("included_pushes", 2**31),
        ("overage_price", 2**31),
        ("max_webhook_endpoints", 2**31),
        ("test_allowance", 2**31),
        ("position", 2**31),
    ],
)
def test_admin_plan_integers_beyond_their_column_are_refused_by_name(
    app, staff_factory, clock, field, value
):
    from tests.compliance.test_compliance_console import signed_in

    client, csrf = signed_in(app, staff_factory("admin"), clock)
    plan = {
        "code": "overflow",
        "name": "Overflow",
        "monthly_price": 1,
        "included_pushes": 1,
        "overage_price": None,
        "rate_limit": "1 per second",
        "max_webhook_endpoints": 1,
        "livemode_allowed": False,
        "test_allowance": 1,
    }

    response = client.post("/v1/admin/plans", json={**plan, field: value}, headers=csrf)

    assert response.status_code == 400, response.get_json()
    assert response.get_json()["error"]["param"] == field


@pytest.mark.parametrize(
    "path",
    ["/v1/api-keys/{key}/roll", "/v1/webhook-endpoints/{endpoint}/rotate-secret"],
)
def test_operations_whose_body_is_optional_take_a_missing_body_as_the_defaults(
    client, tenant_factory, path
):
    tenant = tenant_factory()
    api = ApiClient(client, tenant.secret)
    endpoint = api.post("/v1/webhook-endpoints", json={"url": "https://example.co.ke/hook"})
    assert endpoint.status_code == 201, endpoint.get_json()
    url = path.format(key=tenant.key_id, endpoint=endpoint.get_json()["id"])

    response = api.post(url)

    assert response.status_code in {200, 201}, response.get_json()
