"""The OpenAPI document is the code: valid, complete, honest about authentication; /docs works
offline."""

import ast
import re
from pathlib import Path

import pytest
from openapi_spec_validator import validate

# Served by the app but not API operations: the document itself and its viewer.
UNDOCUMENTED_ENDPOINTS = {"static", "api-docs.openapi_json", "api-docs.openapi_swagger_ui"}
DOCS_ASSETS = "/docs/assets/"
SITE_ASSETS = "/assets/"
AUTOMATIC_METHODS = {"HEAD", "OPTIONS"}
HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
# Everything else needs an API key. Daraja cannot send one: its callback URL carries an
# unguessable token instead.
PUBLIC_OPERATIONS = {
    ("post", "/v1/signup"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("post", "/callbacks/mpesa/stk/{token}"),
    ("post", "/callbacks/stripe"),
    ("get", "/v1/plans"),
    # Staff login's two steps (password, then TOTP): they start the session.
    ("post", "/v1/admin/login"),
    ("post", "/v1/admin/login/totp"),
}
# /v1/admin takes no API key: a staff session cookie (password + TOTP), checked by staff.api.
STAFF_PREFIX = "/v1/admin"


@pytest.fixture
def spec(client):
    response = client.get("/openapi.json")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    return response.get_json()


def _served_routes(app):
    """{(method, openapi path): rule} for every route the app serves as API (the frontend's
    HTML pages, marked `is_page` by frontend.auth.page_blueprint, are not API operations)."""
    routes = {}
    for rule in app.url_map.iter_rules():
        if rule.endpoint in UNDOCUMENTED_ENDPOINTS or rule.rule.startswith(DOCS_ASSETS):
            continue
        if getattr(app.blueprints.get(rule.endpoint.split(".", 1)[0]), "is_page", False):
            continue
        path = re.sub(r"<(?:[^<>:]+:)?([^<>]+)>", r"{\1}", rule.rule)
        for method in rule.methods - AUTOMATIC_METHODS:
            routes[(method.lower(), path)] = rule
    return routes


def _operations(spec):
    return {
        (method, path): operation
        for path, item in spec["paths"].items()
        for method, operation in item.items()
        if method in HTTP_METHODS
    }


def _security(spec, operation):
    # An operation's own `security` (even an empty list) overrides the document's.
    return operation.get("security", spec.get("security", []))


def test_openapi_document_is_valid(spec):
    validate(spec)


def test_openapi_documents_exactly_the_routes_the_app_serves(app, spec):
    served = set(_served_routes(app))

    assert served, "the app serves no API route?"
    assert set(_operations(spec)) == served


def test_every_operation_but_the_listed_public_ones_requires_bearer_auth(spec):
    assert spec["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "sk_…",
    }
    operations = _operations(spec)
    public = {key for key, op in operations.items() if not _security(spec, op)}
    assert public == PUBLIC_OPERATIONS & set(operations)
    assert {("post", "/v1/signup"), ("get", "/healthz"), ("get", "/readyz")} <= public
    for key, operation in operations.items():
        if key not in PUBLIC_OPERATIONS:
            expected = "staffSession" if key[1].startswith(STAFF_PREFIX) else "bearerAuth"
            assert _security(spec, operation) == [{expected: []}], key


def test_documented_security_matches_what_the_app_enforces(app, spec):
    operations = _operations(spec)
    for key, rule in _served_routes(app).items():
        blueprint = app.blueprints[rule.endpoint.split(".", 1)[0]]
        requires_key = getattr(blueprint, "authenticated", False)
        # staff.api.require_staff marks the blueprints it guards with `staff_roles`.
        requires_staff = hasattr(blueprint, "staff_roles")
        assert bool(_security(spec, operations[key])) == (requires_key or requires_staff), key


def test_every_authenticated_operation_documents_401(spec):
    for key, operation in _operations(spec).items():
        if _security(spec, operation):
            assert "401" in operation["responses"], key
            assert operation["responses"]["401"]["content"]["application/json"]["schema"] == {
                "$ref": "#/components/schemas/ApiError"
            }, key


@pytest.mark.parametrize(
    ("method", "path", "request_schema", "status", "response_schema"),
    [
        ("post", "/v1/signup", "SignupRequest", "201", "SignupResponse"),
        ("get", "/v1/api-keys", None, "200", "ApiKeyList"),
        ("post", "/v1/api-keys", "ApiKeyCreate", "201", "IssuedApiKey"),
        ("delete", "/v1/api-keys/{key_id}", None, "200", "ApiKey"),
        ("post", "/v1/api-keys/{key_id}/roll", "ApiKeyRoll", "201", "IssuedApiKey"),
        ("post", "/v1/webhook-endpoints", "WebhookEndpointCreate", "201", "IssuedWebhookEndpoint"),
        ("get", "/v1/webhook-endpoints", None, "200", "WebhookEndpointList"),
        (
            "patch",
            "/v1/webhook-endpoints/{endpoint_id}",
            "WebhookEndpointUpdate",
            "200",
            "WebhookEndpoint",
        ),
        ("delete", "/v1/webhook-endpoints/{endpoint_id}", None, "200", "DeletedWebhookEndpoint"),
        (
            "post",
            "/v1/webhook-endpoints/{endpoint_id}/rotate-secret",
            "WebhookSecretRotate",
            "200",
            "IssuedWebhookEndpoint",
        ),
        ("post", "/v1/webhook-endpoints/{endpoint_id}/test", None, "202", "Event"),
        ("get", "/v1/events", None, "200", "EventList"),
        ("get", "/v1/events/{event_id}", None, "200", "EventDetail"),
        (
            "post",
            "/v1/events/{event_id}/redeliver",
            "EventRedeliver",
            "202",
            "WebhookDeliveryList",
        ),
    ],
)
def test_signup_and_api_key_operations_document_their_schemas(
    spec, method, path, request_schema, status, response_schema
):
    operation = spec["paths"][path][method]
    schemas = spec["components"]["schemas"]

    if request_schema:
        body = operation["requestBody"]["content"]["application/json"]["schema"]
        assert body == {"$ref": f"#/components/schemas/{request_schema}"}
        assert schemas[request_schema]["properties"]
    response = operation["responses"][status]["content"]["application/json"]["schema"]
    assert response == {"$ref": f"#/components/schemas/{response_schema}"}
    assert schemas[response_schema]["properties"]


def test_signup_request_schema_names_its_required_fields(spec):
    schema = spec["components"]["schemas"]["SignupRequest"]

    assert set(schema["required"]) == {"business_name", "email", "password"}


def test_docs_page_loads_swagger_ui_from_local_assets_only(client):
    page = client.get("/docs")

    assert page.status_code == 200
    assert page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assets = re.findall(r'<(?:script|link)\b[^>]*?\b(?:src|href)="([^"]+)"', html)
    assert any(asset.endswith(".js") for asset in assets)
    assert any(asset.endswith(".css") for asset in assets)
    # Swagger UI's own files and the site's (favicon, top bar styles), all served by Lango.
    for asset in assets:
        assert asset.startswith((DOCS_ASSETS, SITE_ASSETS)), asset
    assert not re.search(r"unpkg|jsdelivr|cdnjs|https?://", html)
    assert '"/openapi.json"' in html
    for asset in assets:
        served = client.get(asset)
        assert served.status_code == 200, asset
        assert served.get_data(), asset


def _resolve(spec, schema):
    while "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def _request_properties(spec):
    """(where, property schema) for every property a request takes: query parameters and the
    properties of every request body, nested ones included."""
    found = []

    def walk(schema, where, seen):
        if "$ref" in schema:
            name = schema["$ref"].rsplit("/", 1)[1]
            if name in seen:
                return
            seen = seen | {name}
        schema = _resolve(spec, schema)
        found.append((where, schema))
        for name, item in schema.get("properties", {}).items():
            walk(item, f"{where}.{name}", seen)
        if "items" in schema:
            walk(schema["items"], f"{where}[]", seen)
        if isinstance(schema.get("additionalProperties"), dict):
            walk(schema["additionalProperties"], f"{where}{{}}", seen)

    for (method, path), operation in _operations(spec).items():
        for parameter in operation.get("parameters", []):
            walk(parameter["schema"], f"{method} {path} ?{parameter['name']}", frozenset())
        for content in operation.get("requestBody", {}).get("content", {}).values():
            walk(content["schema"], f"{method} {path} body", frozenset())
    return found


def test_every_integer_a_request_takes_is_bounded(spec):
    # An integer beyond PostgreSQL's range used to reach the database and answer 500.
    integers = [(where, s) for where, s in _request_properties(spec) if s.get("type") == "integer"]

    assert integers
    unbounded = [where for where, s in integers if "minimum" not in s or "maximum" not in s]
    assert unbounded == []
    assert all(s["maximum"] <= 2**53 - 1 and s["minimum"] >= -(2**53) for _, s in integers)


def test_every_documented_request_body_field_is_read_as_documented(app):
    """JSON bodies: integers are integers (not "5" or 1.5) and booleans are true/false only
    (not 0/1 or "yes"), as the document's `type` says."""
    from marshmallow import fields

    from core.api import StrictBoolean
    from core.extensions import api

    request_components = {
        _resolve_name(content["schema"])
        for operation in _operations(api.spec.to_dict()).values()
        for content in operation.get("requestBody", {}).get("content", {}).values()
        if "application/json" in operation["requestBody"]["content"]
    }
    converter = api.ma_plugin.converter
    # apispec keys each documented schema by (its class, modifiers…).
    schemas = {name: key[0] for key, name in converter.refs.items()}
    loose = []
    for name in sorted(request_components):
        for field_name, field in schemas[name]().fields.items():
            if field.dump_only:
                continue
            if isinstance(field, fields.Boolean) and not isinstance(field, StrictBoolean):
                loose.append(f"{name}.{field_name} (boolean)")
            if isinstance(field, fields.Integer) and not field.strict:
                loose.append(f"{name}.{field_name} (integer)")
    assert request_components
    assert loose == []


def _resolve_name(schema):
    return schema["$ref"].rsplit("/", 1)[1]


def test_the_error_schema_names_every_detail_an_error_carries(spec):
    """Errors add details (e.g. `stk_push_id`, `limit`) as keyword arguments; the documented
    error schema allows no undocumented field, so every one raised anywhere is listed."""
    schema = spec["components"]["schemas"]["ApiErrorDetail"]
    details = _details_errors_are_raised_with()

    assert schema["additionalProperties"] is False
    assert {"stk_push_id", "daraja_error_code", "limit"} <= details
    assert details <= set(schema["properties"])


def _details_errors_are_raised_with() -> set[str]:
    """The keyword arguments, beyond LangoError's own, of every call that builds a LangoError
    (any subclass) in the application's packages, read from their source."""
    root = Path(__file__).resolve().parents[2]
    packages = ("core", "tenants", "payments", "billing", "compliance", "webhooks", "staff")
    trees = [ast.parse(path.read_text()) for p in packages for path in (root / p).rglob("*.py")]
    classes = [
        (tree, node) for tree in trees for node in ast.walk(tree) if isinstance(node, ast.ClassDef)
    ]
    errors = {"LangoError"}
    grew = True
    while grew:
        grew = False
        for _, node in classes:
            if node.name not in errors and any(_name(base) in errors for base in node.bases):
                errors.add(node.name)
                grew = True
    details = set()
    for tree in trees:
        # A module's own class of the same name wins (payments.daraja's DarajaUnavailable is
        # an internal exception, not the API error of payments.service).
        shadowed = {
            node.name
            for owner, node in classes
            if owner is tree and not any(_name(base) in errors for base in node.bases)
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and _name(node.func) in errors - shadowed:
                details |= {keyword.arg for keyword in node.keywords if keyword.arg}
    return details - {"message", "code", "param", "errors", "headers"}


def _name(node) -> str | None:
    return getattr(node, "id", None) or getattr(node, "attr", None)
