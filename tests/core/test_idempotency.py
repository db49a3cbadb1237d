"""Idempotency-Key claims are leases: a request that died (killed, aborted) blocks its key no
longer than IDEMPOTENCY_LEASE_SECONDS, and a retry never makes a second STK push when the first
attempt committed one. (The same through a real SIGKILLed gunicorn worker:
tests/core/test_idempotency_crash.py.)"""

import secrets
import threading
from types import SimpleNamespace

import pytest
from sqlalchemy import text

from core import idempotency
from core.extensions import db
from core.tenancy import tenant_scope
from payments import service
from tests.payments.test_stk_push import push_body

STKPUSHES = "/v1/stk-pushes"


class WorkerDied(BaseException):
    """Stands for a death inside the request: gunicorn's worker timeout raises SystemExit
    there; SIGKILL and OOM raise nothing at all (then `_release` never runs either)."""


class FakeDaraja:
    def __init__(self):
        self.calls = 0
        self.raise_on_call: BaseException | None = None

    def stk_push(self, **_):
        self.calls += 1
        if self.raise_on_call is not None:
            raise self.raise_on_call
        return SimpleNamespace(
            merchant_request_id=f"mr-{secrets.token_hex(4)}",
            checkout_request_id=f"ws_CO_{secrets.token_hex(8)}",
        )


@pytest.fixture
def daraja(monkeypatch):
    fake = FakeDaraja()
    monkeypatch.setattr(service, "daraja_client", lambda credentials: fake)
    return fake


@pytest.fixture
def killed(monkeypatch):
    """Requests die as under SIGKILL: no Python code runs after, so nothing is released."""
    monkeypatch.setattr(idempotency, "_release", lambda claim: None)


def _push_ids(app, tenant) -> list[str]:
    with app.app_context(), tenant_scope(tenant.id):
        return list(db.session.execute(text("SELECT id FROM stk_pushes")).scalars())


def _let_leases_run_out(app, tenant) -> None:
    """What waiting IDEMPOTENCY_LEASE_SECONDS does."""
    with app.app_context(), tenant_scope(tenant.id):
        db.session.execute(
            text("UPDATE idempotency_keys SET locked_at = locked_at - interval '1 hour'")
        )
        db.session.commit()


def _request_dies_before_its_push(api, body, key, monkeypatch) -> None:
    """One request with `key` whose process dies after claiming the key, before its push."""

    def die(*args, **kwargs):
        raise WorkerDied

    with monkeypatch.context() as patched:
        patched.setattr(service, "daraja_credentials", die)
        with pytest.raises(WorkerDied):
            api.post(STKPUSHES, json=body, headers=key)


def test_a_key_whose_request_died_is_held_for_the_lease_then_runs_once(
    app, api, tenant, daraja, killed, monkeypatch
):
    body, key = push_body(), {"Idempotency-Key": "died-early"}
    _request_dies_before_its_push(api, body, key, monkeypatch)

    held = api.post(STKPUSHES, json=body, headers=key)
    _let_leases_run_out(app, tenant)
    retried = api.post(STKPUSHES, json=body, headers=key)
    replayed = api.post(STKPUSHES, json=body, headers=key)

    assert held.status_code == 409
    assert held.get_json()["error"]["code"] == "idempotency_key_in_use"
    assert retried.status_code == 202
    assert replayed.get_json() == retried.get_json()
    assert replayed.headers["Idempotent-Replayed"] == "true"
    assert _push_ids(app, tenant) == [retried.get_json()["id"]]
    assert daraja.calls == 1


def test_a_retry_after_a_death_past_the_push_answers_with_that_push(
    app, api, tenant, daraja, killed
):
    body, key = push_body(), {"Idempotency-Key": "died-calling-daraja"}
    daraja.raise_on_call = WorkerDied()
    with pytest.raises(WorkerDied):
        api.post(STKPUSHES, json=body, headers=key)
    [first_push] = _push_ids(app, tenant)
    daraja.raise_on_call = None

    _let_leases_run_out(app, tenant)
    retried = api.post(STKPUSHES, json=body, headers=key)

    assert retried.status_code == 202
    assert retried.get_json()["id"] == first_push
    assert retried.get_json()["status"] == "pending"
    assert _push_ids(app, tenant) == [first_push]  # no second push
    assert daraja.calls == 1  # and no second prompt


def test_a_request_aborted_after_its_push_frees_its_key_at_once_for_that_push(
    app, api, tenant, daraja
):
    body, key = push_body(), {"Idempotency-Key": "aborted"}
    daraja.raise_on_call = WorkerDied()  # e.g. gunicorn's worker timeout: SystemExit
    with pytest.raises(WorkerDied):
        api.post(STKPUSHES, json=body, headers=key)
    [first_push] = _push_ids(app, tenant)
    daraja.raise_on_call = None

    retried = api.post(STKPUSHES, json=body, headers=key)

    assert retried.status_code == 202
    assert retried.get_json()["id"] == first_push
    assert _push_ids(app, tenant) == [first_push]
    assert daraja.calls == 1


def test_of_simultaneous_retries_of_an_abandoned_key_one_runs(
    app, client, api, tenant, daraja, killed, monkeypatch
):
    body, key = push_body(), {"Idempotency-Key": "stampede"}
    _request_dies_before_its_push(api, body, key, monkeypatch)
    _let_leases_run_out(app, tenant)
    barrier = threading.Barrier(6)
    statuses = []

    def retry():
        with app.test_client() as own:
            barrier.wait()
            response = own.post(
                STKPUSHES,
                json=body,
                headers={**key, "Authorization": f"Bearer {tenant.secret}"},
            )
            statuses.append((response.status_code, response.get_json()))

    threads = [threading.Thread(target=retry) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert len(statuses) == 6
    assert {status for status, _ in statuses} <= {202, 409}
    assert {body["id"] for status, body in statuses if status == 202} == set(_push_ids(app, tenant))
    assert len(_push_ids(app, tenant)) == 1
    assert daraja.calls == 1


def test_a_request_that_outlived_its_lease_makes_no_second_push(
    app, api, tenant, daraja, monkeypatch
):
    """The first attempt stalls before its push exists; its lease runs out and a retry takes
    the key over and pushes. The first one, resuming, finds its claim gone and makes nothing."""
    body, key = push_body(), {"Idempotency-Key": "outlived"}
    original_credentials = service.daraja_credentials
    retries = []
    overtaken = threading.Event()

    def stall_then_be_overtaken(*args, **kwargs):
        if not overtaken.is_set():
            overtaken.set()
            _let_leases_run_out(app, tenant)
            worker = threading.Thread(
                target=lambda: retries.append(
                    app.test_client().post(
                        STKPUSHES,
                        json=body,
                        headers={**key, "Authorization": f"Bearer {tenant.secret}"},
                    )
                )
            )
            worker.start()
            worker.join(60)
        return original_credentials(*args, **kwargs)

    monkeypatch.setattr(service, "daraja_credentials", stall_then_be_overtaken)

    first = api.post(STKPUSHES, json=body, headers=key)
    [retry] = retries
    again = api.post(STKPUSHES, json=body, headers=key)

    assert retry.status_code == 202
    assert first.status_code == 409
    assert first.get_json()["error"]["code"] == "idempotency_key_in_use"
    assert _push_ids(app, tenant) == [retry.get_json()["id"]]
    assert daraja.calls == 1
    assert again.get_json() == retry.get_json()  # the retry's answer is the one kept
