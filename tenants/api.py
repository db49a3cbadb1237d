"""HTTP endpoints: signup, the calling tenant, API keys. Parse, call the service, serialize."""

from __future__ import annotations

from datetime import timedelta

from flask import current_app
from flask.views import MethodView

from core.api import Blueprint, ListQuerySchema, errors
from core.errors import PermissionDenied
from core.extensions import limiter
from core.ratelimit import client_ip
from tenants import service
from tenants.auth import current_caller
from tenants.schemas import (
    ApiKeyCreateSchema,
    ApiKeyListSchema,
    ApiKeyRollSchema,
    ApiKeySchema,
    CurrentTenantSchema,
    IssuedApiKeySchema,
    SignupRequestSchema,
    SignupResponseSchema,
)

signup = Blueprint("signup", __name__, description="Create a tenant account", authenticated=False)
tenant = Blueprint("tenant", __name__, description="The calling tenant")
api_keys = Blueprint("api_keys", __name__, description="Secret API keys")


def _signup_limit() -> str:
    return current_app.extensions["lango.settings"].RATELIMIT_SIGNUP


@signup.post("/v1/signup")
@signup.doc(security=[])
@limiter.limit(_signup_limit, key_func=lambda: "signup:" + client_ip())
@signup.arguments(SignupRequestSchema)
@signup.response(201, SignupResponseSchema)
@errors(signup, 400, 402, 409, 429, 503)
def create_signup(body):
    """Sign a business up: creates the tenant, its schema and a test key (shown once).
    A paid plan is billed through Stripe where it is configured (402 when the card is
    refused outright, 503 when Stripe is down: nothing is created)."""
    result = service.sign_up(
        body["business_name"],
        body["email"],
        body["password"],
        body.get("plan"),
        body.get("payment_method"),
    )
    return {"tenant": result.tenant, "api_key": result.issued}


@tenant.get("/v1/tenant")
@tenant.response(200, CurrentTenantSchema)
@errors(tenant, 401, 403)
def get_current_tenant():
    """The tenant the API key belongs to, and the key's mode."""
    caller = current_caller()
    return {"tenant": service.get_tenant(caller.tenant_id), "livemode": caller.livemode}


@api_keys.route("/v1/api-keys")
class ApiKeys(MethodView):
    @api_keys.arguments(ListQuerySchema, location="query")
    @api_keys.response(200, ApiKeyListSchema)
    @errors(api_keys, 400, 401, 403)
    def get(self, query):
        """List the active keys of the calling key's mode (never their secrets)."""
        caller = current_caller()
        return service.list_api_keys(caller.tenant_id, livemode=caller.livemode, **query)

    @api_keys.arguments(ApiKeyCreateSchema)
    @api_keys.response(201, IssuedApiKeySchema)
    @errors(api_keys, 400, 401, 403, 409)
    def post(self, body):
        """Create a key; its secret is in this response only.

        A tenant holds at most 20 active keys per mode: one more is a 409
        `api_key_limit_reached` (revoke one first). The plan's rate limit is the tenant's,
        shared by all its keys."""
        caller = current_caller()
        livemode = body["mode"] == "live"
        if livemode != caller.livemode:
            raise PermissionDenied(
                "A key can only create keys of its own mode.", code="mode_mismatch", param="mode"
            )
        return service.create_api_key(caller.tenant_id, livemode=livemode, name=body["name"])


@api_keys.route("/v1/api-keys/<string:key_id>")
class ApiKeyById(MethodView):
    @api_keys.response(200, ApiKeySchema)
    @errors(api_keys, 401, 403, 404)
    def delete(self, key_id):
        """Revoke a key at once."""
        caller = current_caller()
        return service.revoke_api_key(caller.tenant_id, key_id, livemode=caller.livemode)


@api_keys.post("/v1/api-keys/<string:key_id>/roll")
@api_keys.arguments(ApiKeyRollSchema, required=False)  # no body: no grace period
@api_keys.response(201, IssuedApiKeySchema)
@errors(api_keys, 400, 401, 403, 404, 409)
def roll_api_key(body, key_id):
    """Replace a key with a new secret; the old one may keep working for a grace period.

    With a grace period both keys count toward the 20 active keys per mode until it ends:
    at that cap, a roll with grace is a 409 `api_key_limit_reached` (one without grace
    always works)."""
    caller = current_caller()
    return service.roll_api_key(
        caller.tenant_id,
        key_id,
        livemode=caller.livemode,
        grace=timedelta(seconds=body["grace_period_seconds"]),
    )
