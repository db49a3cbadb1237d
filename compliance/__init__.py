"""Compliance: the audit log, fraud screening and review, KYC records."""

from flask import Flask


def init_app(app: Flask) -> None:
    """Register what compliance brings: its API, the audit trail's hold on every audited
    change (in the change's own transaction), the chain's checkpoints, `lango audit`."""
    # Imported when the app is built, not with the package: importing `compliance` for its
    # models then loads no web code.
    from compliance import audit, jobs
    from compliance.api import admin_audit_log, admin_fraud, audit_log
    from compliance.cli import audit as audit_command
    from compliance.kyc_api import admin_kyc, kyc_records
    from core import changes
    from core.extensions import api
    from core.jobs import register_periodic

    for blueprint in (audit_log, kyc_records, admin_kyc, admin_audit_log, admin_fraud):
        api.register_blueprint(blueprint)
    # Audited in the change's own transaction: the entry commits, or rolls back, with it.
    changes.tenant_created.connect(audit.on_tenant_created)
    changes.plan_changed.connect(audit.on_plan_changed)
    changes.api_key_changed.connect(audit.on_api_key_changed)
    changes.endpoint_changed.connect(audit.on_endpoint_changed)
    changes.member_changed.connect(audit.on_member_changed)
    app.cli.add_command(audit_command)
    # Anchors every audit chain's head: deleting a chain's entries up to its anchor shows.
    register_periodic(app, jobs.checkpoint_audit_chain, queue="default", interval=60, timeout=300)
