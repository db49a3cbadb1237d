"""Platform staff: accounts with password + TOTP login, and the `/v1/admin` console API."""

from flask import Flask


def init_app(app: Flask) -> None:
    """Register what staff brings: the admin API (tenants, plans, and the compliance admin
    endpoints), staff sign-in and sessions (loaded through tenants' session-user port), staff
    as actors in the audit trail and as compliance's directory of reviewers, and the
    operators' commands (`lango staff`, `lango queues`, `lango tenants` …)."""
    # Imported when the app is built, not with the package: importing `staff` for its
    # models then loads no web code.
    from compliance import audit
    from compliance.ports import StaffDirectory, provide_staff_directory
    from core.extensions import api
    from staff import cli, operations, service
    from staff.api import admin_tenants, staff_login, staff_session
    from staff.compliance_api import admin_audit_log, admin_fraud
    from staff.kyc_api import admin_kyc
    from staff.models import SESSION_ID_PREFIX, StaffUser
    from tenants.auth import register_session_user_loader

    # In this order, the OpenAPI document lists them as it always has.
    for blueprint in (
        staff_login,
        staff_session,
        admin_tenants,
        admin_kyc,
        admin_audit_log,
        admin_fraud,
    ):
        api.register_blueprint(blueprint)
    register_session_user_loader(app, SESSION_ID_PREFIX.rstrip(":"), service.load_session_user)
    # Staff signed in to the consoles act as themselves in the trail (members are known).
    audit.name_session_users(StaffUser, audit.ActorType.STAFF)
    provide_staff_directory(
        app, StaffDirectory(find=service.find_staff, compliance_staff=service.list_compliance_staff)
    )
    for command in (*cli.COMMANDS, *operations.COMMANDS):
        app.cli.add_command(command)
