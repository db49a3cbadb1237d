"""The REST API's shared machinery: flask-smorest set-up, request parsing that fails in
Lango's error shape, the error schema for the OpenAPI document, common fields, cursor
pagination, and the offline Swagger UI at /docs."""

from __future__ import annotations

from datetime import UTC
from functools import wraps

import flask_smorest
import swagger_ui_bundle
from flask import Blueprint as FlaskBlueprint
from flask import current_app, render_template, request, send_from_directory, url_for
from marshmallow import Schema, fields, validate
from webargs.flaskparser import FlaskParser, is_json_request

from core.errors import ValidationFailed

_MISSING = "Missing data for required field."


def _flatten(messages, prefix: str = "") -> dict[str, list[str]]:
    """{"json": {"a": {"b": ["x"]}}} → {"a.b": ["x"]}; schema-level errors under "_schema"."""
    flat: dict[str, list[str]] = {}
    if isinstance(messages, list):
        flat[prefix or "_schema"] = [str(message) for message in messages]
        return flat
    for key, value in messages.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        flat.update(_flatten(value, name))
    return flat


def validation_error(messages: dict) -> ValidationFailed:
    if set(messages) <= {"json", "query", "headers", "view_args", "form", "files", "querystring"}:
        messages = {k: v for location in messages.values() for k, v in _unwrap(location).items()}
    errors = _flatten(messages)
    param, first = next(iter(errors.items()))
    missing = all(_MISSING in problems for problems in errors.values())
    subject = "The request body" if param == "_schema" else param
    return ValidationFailed(
        f"{subject}: {first[0]}"
        if len(errors) == 1
        else f"{len(errors)} parameters are invalid (first, {subject}: {first[0]})",
        code="parameter_missing" if missing else "parameter_invalid",
        param=None if param == "_schema" else param,
        errors=errors,
    )


def _unwrap(location_messages) -> dict:
    return (
        location_messages if isinstance(location_messages, dict) else {"_schema": location_messages}
    )


class LangoParser(FlaskParser):
    """webargs parser that raises ValidationFailed (400, every field named) instead of
    flask-smorest's 422."""

    DEFAULT_VALIDATION_STATUS = 400

    def handle_error(self, error, req, schema, *, error_status_code, error_headers):
        raise validation_error(error.messages)

    def load_json(self, req, schema):
        # webargs ignores a body that is not labelled JSON; every field would then be reported
        # missing, hiding the real mistake (e.g. `curl -d` sends form encoding).
        if not is_json_request(req) and req.get_data(cache=True):
            raise ValidationFailed(
                "Send the request body as JSON, with `Content-Type: application/json`.",
                code="invalid_json",
            )
        try:
            body = super().load_json(req, schema)
        except RecursionError:
            # Absurdly deep nesting exhausts the JSON decoder's stack: still just a bad body.
            raise _invalid_json() from None
        _refuse_nul(body)
        return body

    def _handle_invalid_json_error(self, error, req, *args, **kwargs):
        raise _invalid_json()


def _invalid_json() -> ValidationFailed:
    return ValidationFailed("The request body is not valid JSON.", code="invalid_json")


NUL_MESSAGE = "Must not contain the NUL character (\\u0000)."


def field_with_nul(value, path: str = "") -> str | None:
    """The first field of `value` (parsed JSON, or a query string's or form's MultiDict) whose
    name or text holds a NUL character, as `a.b.0`; None when there is none. PostgreSQL
    cannot store NUL in text or JSON, so such input is refused up front, never a 500."""
    if hasattr(value, "lists"):  # a MultiDict, where a field may repeat
        value = {key: "".join(values) for key, values in value.lists()}
    if isinstance(value, str):
        return (path or "_schema") if "\x00" in value else None
    if isinstance(value, dict):
        items = ((str(key), item) for key, item in value.items())
    elif isinstance(value, list):
        items = ((str(index), item) for index, item in enumerate(value))
    else:
        return None
    for key, item in items:
        name = f"{path}.{key}" if path else key
        if "\x00" in key:
            return name.replace("\x00", "\\u0000")
        found = field_with_nul(item, name)
        if found is not None:
            return found
    return None


def _refuse_nul(value) -> None:
    try:
        name = field_with_nul(value)
    except RecursionError:
        raise _invalid_json() from None  # nested to the edge of what the decoder allows
    if name is not None:
        raise validation_error({name: [NUL_MESSAGE]})


class Blueprint(flask_smorest.Blueprint):
    """flask-smorest Blueprint parsing with LangoParser. `authenticated=True` (the default)
    makes every route require an API key; the app's before_request hook enforces it."""

    ARGUMENTS_PARSER = LangoParser()

    def __init__(self, *args, authenticated: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.authenticated = authenticated

    def arguments(self, schema, *, location="json", required=True, **kwargs):
        """flask-smorest's `arguments`, enforcing what the OpenAPI document says: a JSON body
        documented as required (the default) is refused when missing, instead of being read
        as `{}`. Where leaving the body out means "the defaults", pass `required=False`."""
        parse = super().arguments(schema, location=location, required=required, **kwargs)
        if location != "json" or not required:
            return parse

        def decorate(view):
            parsed_view = parse(view)

            @wraps(parsed_view)
            def view_with_a_body(*args, **kwargs):
                if not request.get_data(cache=True):
                    raise ValidationFailed(
                        "The request body is missing; send a JSON object.",
                        code="parameter_missing",
                    )
                return parsed_view(*args, **kwargs)

            return view_with_a_body

        return decorate


class ApiErrorDetailSchema(Schema):
    type = fields.String(required=True, metadata={"example": "invalid_request_error"})
    code = fields.String(required=True, metadata={"example": "parameter_invalid"})
    message = fields.String(required=True)
    param = fields.String(metadata={"description": "The offending field, when there is one"})
    errors = fields.Dict(
        keys=fields.String(),
        values=fields.List(fields.String()),
        metadata={"description": "Every invalid field with its problems"},
    )
    request_id = fields.String(required=True, metadata={"example": "req_01j..."})
    # Details some errors add (LangoError's keyword arguments), each named here: the error
    # schema allows no other field.
    stk_push_id = fields.String(
        metadata={
            "description": "daraja_unavailable: the push that failed; invoice_payment_in_"
            "progress: the push still open"
        }
    )
    daraja_error_code = fields.String(
        allow_none=True,
        metadata={"description": "daraja_unavailable: Daraja's own error code, when it gave one"},
    )
    plan = fields.String(
        metadata={"description": "quota_exceeded, livemode_not_enabled: the plan's code"}
    )
    subscription_status = fields.String(
        metadata={"description": "livemode_not_enabled: the unpaid subscription's status"}
    )
    limit = fields.Integer(
        metadata={
            "description": "quota_exceeded: pushes allowed this period; endpoint_limit_reached: "
            "webhook endpoints the plan allows"
        }
    )
    used = fields.Integer(metadata={"description": "quota_exceeded: pushes counted this period"})
    resets_at = fields.String(
        metadata={"description": "quota_exceeded: when the allowance resets (ISO 8601 UTC)"}
    )
    rule_id = fields.String(
        allow_none=True,
        metadata={"description": "fraud_blocked: the rule that blocked it (null: the blocklist)"},
    )
    blocked_by = fields.String(
        validate=validate.OneOf(["rule", "blocklist"]),
        metadata={"description": "fraud_blocked: a rule or the tenant's blocklist"},
    )
    invoice_status = fields.String(
        metadata={"description": "invoice_not_open: the invoice's status"}
    )


class ApiErrorSchema(Schema):
    error = fields.Nested(ApiErrorDetailSchema, required=True)


class LangoApi(flask_smorest.Api):
    ERROR_SCHEMA = ApiErrorSchema

    def _openapi_swagger_ui(self):
        # flask-smorest's bare page has no viewport, favicon or way back to the site; the
        # pages' own template (frontend/templates/api_docs.html) wraps the same Swagger UI.
        return render_template(
            "api_docs.html",
            title=self.spec.title,
            spec_url=url_for(f"{self._make_doc_blueprint_name()}.openapi_json"),
            swagger_ui_url=self._swagger_ui_url,
            swagger_ui_config=self.config.get("OPENAPI_SWAGGER_UI_CONFIG", {}),
        )


def errors(blueprint: flask_smorest.Blueprint, *statuses: int):
    """Document error responses (in Lango's error shape) on an endpoint."""
    descriptions = {
        400: "Invalid parameters (every field named)",
        401: "Missing, unknown, revoked or expired API key",
        402: "Payment required (quota exceeded, or a card declined)",
        403: "Not permitted (e.g. tenant suspended)",
        404: "No such object",
        409: "Conflict",
        429: "Rate limited (Retry-After given)",
        502: "Upstream (Daraja) error",
        503: "Upstream unavailable",
    }

    def decorate(func):
        for status in statuses:
            func = blueprint.alt_response(
                status, schema=ApiErrorSchema, description=descriptions.get(status, "Error")
            )(func)
        return func

    return decorate


# Bounds for every integer a request carries, so the database never sees one beyond its
# column's range (that was a 500): PostgreSQL's `integer` for counts and positions, and for
# amounts kept in `bigint` the largest integer every JSON client reads exactly (2**53 - 1).
# Schemas use validate.Range with these; the OpenAPI document shows them as minimum/maximum.
MAX_INTEGER = 2**31 - 1
MAX_BIG_INTEGER = 2**53 - 1


class StrictBoolean(fields.Boolean):
    """JSON `true` or `false` only. marshmallow's Boolean also takes 1, 0, "yes", "on"…,
    which the OpenAPI document (`type: boolean`) does not allow."""

    def _deserialize(self, value, attr, data, **kwargs):
        if value is True or value is False:
            return value
        raise self.make_error("invalid", input=value)


class UtcDateTime(fields.DateTime):
    """ISO 8601 in UTC with a `Z`, as the API promises for every time."""

    def _serialize(self, value, attr, obj, **kwargs):
        if value is None:
            return None
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ListQuerySchema(Schema):
    limit = fields.Integer(load_default=20, validate=validate.Range(min=1, max=100))
    starting_after = fields.String()
    ending_before = fields.String()


def list_schema(item_schema: type[Schema], name: str) -> type[Schema]:
    return Schema.from_dict(
        {
            "object": fields.Constant("list"),
            "data": fields.List(fields.Nested(item_schema)),
            "has_more": fields.Boolean(),
        },
        name=name,
    )


def paginate(statement, id_column, *, limit: int, starting_after=None, ending_before=None):
    """Run a select with cursor pagination over ids that sort by creation (ULIDs), newest
    first. `starting_after` pages towards older objects, `ending_before` towards newer ones.
    Returns the list envelope `{"object": "list", "data": [...], "has_more": bool}`."""
    # Flask-SQLAlchemy's instance as the app holds it: core.extensions builds on this module.
    db = current_app.extensions["sqlalchemy"]
    if starting_after and ending_before:
        raise ValidationFailed(
            "Use starting_after or ending_before, not both.", param="ending_before"
        )
    if ending_before:
        statement = statement.where(id_column > ending_before).order_by(id_column.asc())
        rows = db.session.scalars(statement.limit(limit + 1)).all()
        return {"object": "list", "data": rows[:limit][::-1], "has_more": len(rows) > limit}
    if starting_after:
        statement = statement.where(id_column < starting_after)
    rows = db.session.scalars(statement.order_by(id_column.desc()).limit(limit + 1)).all()
    return {"object": "list", "data": rows[:limit], "has_more": len(rows) > limit}


SWAGGER_ASSETS_URL = "/docs/assets/"

docs_assets = FlaskBlueprint("docs_assets", __name__)


@docs_assets.get(f"{SWAGGER_ASSETS_URL}<path:filename>")
def swagger_asset(filename: str):
    # Swagger UI served from the installed package, so /docs works with no internet.
    return send_from_directory(swagger_ui_bundle.swagger_ui_path, filename, max_age=86400)
