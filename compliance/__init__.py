"""Compliance: the audit log, fraud screening and review, KYC records."""

from flask import Flask


def init_app(app: Flask) -> None:
    """Register what compliance brings: the tenants' audit log and KYC API, the audit
    trail's hold on every audited change (in the change's own transaction), the fraud
    counters' outbox subscriber, the chains' anchors and `lango audit`. (Compliance staff's
    /v1/admin endpoints are staff's: staff.compliance_api, staff.kyc_api.)"""
    # Imported when the app is built, not with the package: importing `compliance` for its
    # models then loads no web code.
    from compliance import audit, fraud, jobs
    from compliance.api import audit_log
    from compliance.cli import audit as audit_command
    from compliance.kyc_api import kyc_records
    from core import changes
    from core.events import EventType, subscribe
    from core.extensions import api
    from core.jobs import register_periodic

    for blueprint in (audit_log, kyc_records):
        api.register_blueprint(blueprint)
    # Audited in the change's own transaction: the entry commits, or rolls back, with it.
    changes.tenant_created.connect(audit.on_tenant_created)
    changes.plan_changed.connect(audit.on_plan_changed)
    changes.api_key_changed.connect(audit.on_api_key_changed)
    changes.endpoint_changed.connect(audit.on_endpoint_changed)
    changes.member_changed.connect(audit.on_member_changed)
    # A push the customer cancelled feeds the phone_cancellations_1h velocity counter.
    subscribe(
        app,
        "compliance.cancellation_counter",
        fraud.count_cancellation,
        types={EventType.PAYMENT_CANCELLED},
    )
    app.cli.add_command(audit_command)
    # Anchors every audit chain's head: deleting a chain's entries up to its anchor shows.
    register_periodic(app, jobs.checkpoint_audit_chain, queue="default", interval=60, timeout=300)
