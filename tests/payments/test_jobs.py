"""The periodic reconciliation runs as a real RQ job on a real Redis queue."""

import threading

from click.testing import CliRunner
from rq import Queue, SimpleWorker

from core.cli import main
from payments.jobs import reconcile_pending_pushes
from tests.payments.test_stk_push import STKPUSHES, push_body


def test_worker_runs_reconciliation_and_resolves_a_lost_callback(platform, app, api):
    push_id = api.post(STKPUSHES, json=push_body("254700000099")).get_json()["id"]
    threading.Event().wait(1.5)  # past the sandbox's decision and RECONCILE_AFTER_SECONDS
    redis = app.extensions["lango.redis"]
    queue = Queue("default", connection=redis)

    job = queue.enqueue(reconcile_pending_pushes)
    with app.app_context():
        SimpleWorker([queue], connection=redis).work(burst=True)

    assert job.get_status(refresh=True) == "finished", job.latest_result()
    assert job.return_value()["resolved"] >= 1
    assert api.get(f"{STKPUSHES}/{push_id}").get_json()["status"] == "succeeded"


def test_scheduler_registers_reconciliation(app, monkeypatch):
    from rq.cron import CronScheduler

    registered = []
    monkeypatch.setattr(CronScheduler, "start", lambda self: registered.extend(self.get_jobs()))

    result = CliRunner().invoke(main, ["scheduler"], obj=_script_info(app))

    assert result.exit_code == 0, result.output
    assert "payments.jobs.reconcile_pending_pushes" in [job.func_name for job in registered]


def _script_info(app):
    from flask.cli import ScriptInfo

    return ScriptInfo(create_app=lambda: app)
