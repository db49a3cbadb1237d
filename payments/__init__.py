"""Payments: the Daraja client, STK push, callbacks, reconciliation and the Daraja sandbox."""

from flask import Flask


def init_app(app: Flask) -> None:
    """Register what payments brings: its API and callbacks, reconciliation of pushes,
    `lango sandbox`, and the ports lower packages collect through (billing's invoice
    collector)."""
    # Imported when the app is built, not with the package: the sandbox (`payments.sandbox`,
    # its own process) imports this package and must load none of Lango's web code.
    from billing.invoices import settle_invoice_payment
    from billing.ports import provide_invoice_collector
    from compliance.fraud import count_cancellation
    from core.extensions import api
    from core.jobs import register_periodic
    from payments import invoice_collection, jobs
    from payments.api import callbacks, mpesa_credentials, stk_pushes
    from payments.cli import sandbox
    from payments.service import push_finished

    for blueprint in (stk_pushes, mpesa_credentials, callbacks):
        api.register_blueprint(blueprint)
    push_finished.connect(settle_invoice_payment)
    push_finished.connect(count_cancellation)  # feeds fraud velocity counters
    app.cli.add_command(sandbox)
    provide_invoice_collector(app, invoice_collection)
    settings = app.extensions["lango.settings"]
    register_periodic(
        app,
        jobs.reconcile_pending_pushes,
        queue="default",
        interval=max(5, settings.RECONCILE_INTERVAL_SECONDS // 2),
        timeout=300,
    )
