"""Payments: the Daraja client, STK push, callbacks, reconciliation and the Daraja sandbox."""

from flask import Flask


def init_app(app: Flask) -> None:
    """Register what payments brings: its API and callbacks, reconciliation of pushes,
    `lango sandbox`, and what lower packages read through their ports: billing's invoice
    collector, compliance's push facts."""
    # Imported when the app is built, not with the package: the sandbox (`payments.sandbox`,
    # its own process) imports this package and must load none of Lango's web code.
    from billing.ports import provide_invoice_collector
    from compliance.ports import provide_pushes
    from core.extensions import api
    from core.jobs import register_periodic
    from payments import invoice_collection, jobs, push_facts
    from payments.api import callbacks, mpesa_credentials, stk_pushes
    from payments.cli import sandbox

    for blueprint in (stk_pushes, mpesa_credentials, callbacks):
        api.register_blueprint(blueprint)
    app.cli.add_command(sandbox)
    provide_invoice_collector(app, invoice_collection)
    provide_pushes(app, push_facts.reader)
    settings = app.extensions["lango.settings"]
    register_periodic(
        app,
        jobs.reconcile_pending_pushes,
        queue="default",
        interval=max(5, settings.RECONCILE_INTERVAL_SECONDS // 2),
        timeout=300,
    )
