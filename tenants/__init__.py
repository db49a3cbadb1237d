"""Tenants: businesses on the platform, their members, API keys and lifecycle."""

from flask import Flask


def init_app(app: Flask) -> None:
    """Register what tenants brings: its API, the API-key authentication core runs before
    each request, the session user loader (members; packages above add theirs) and the
    purge of old Idempotency-Keys."""
    # Imported when the app is built, not with the package: importing `tenants` for its
    # models (Alembic, another package's service) then loads no web code.
    from core.auth import provide_authenticator
    from core.extensions import api, login_manager
    from core.jobs import register_periodic
    from tenants import jobs
    from tenants.api import api_keys, signup, tenant
    from tenants.auth import authenticate_request, load_session_user

    for blueprint in (signup, tenant, api_keys):
        api.register_blueprint(blueprint)
    provide_authenticator(app, authenticate_request)
    login_manager.user_loader(load_session_user)
    # Idempotency-Keys are kept 24 h, then dropped so the table stays small.
    register_periodic(app, jobs.purge_idempotency_keys, queue="default", interval=3600, timeout=600)
