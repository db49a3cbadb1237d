"""Platform staff: accounts with password + TOTP login, and the `/v1/admin` console API."""

from flask import Flask


def init_app(app: Flask) -> None:
    """Register what staff brings: the admin API and staff sign-in, staff as actors in the
    audit trail, and the operators' commands."""
    # Imported when the app is built, not with the package: importing `staff` for its
    # models then loads no web code.
    from compliance import audit
    from core.extensions import api
    from staff import operations
    from staff.api import admin_tenants, staff_login, staff_session
    from staff.cli import staff as staff_command
    from staff.models import StaffUser
    from webhooks.cli import queues

    for blueprint in (staff_login, staff_session, admin_tenants):
        api.register_blueprint(blueprint)
    # Staff signed in to the consoles act as themselves in the trail (members are known).
    audit.name_session_users(StaffUser, audit.ActorType.STAFF)
    for command in (staff_command, queues, *operations.COMMANDS):
        app.cli.add_command(command)
