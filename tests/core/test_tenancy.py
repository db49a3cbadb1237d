"""Tenant isolation: one schema per tenant, bound per transaction, failing closed."""

import threading

import pytest
from flask import jsonify
from sqlalchemy import func, select, text
from sqlalchemy.exc import ProgrammingError

from core import create_app
from core.api import Blueprint
from core.events import Event, EventType, record_event
from core.extensions import db
from core.tenancy import TenantScopeError, current_tenant, tenant_scope
from tests.conftest import make_config, reset_state


def _event_ids() -> set[str]:
    return set(db.session.scalars(select(Event.id)))


def test_concurrent_writers_never_see_each_others_rows(app, tenant_factory):
    tenants = [tenant_factory("Alpha Ltd"), tenant_factory("Beta Ltd")]
    rounds = 25
    barrier = threading.Barrier(len(tenants))
    seen: dict[str, set[str]] = {}
    written: dict[str, set[str]] = {}
    failures: list[BaseException] = []

    def write_and_read(tenant) -> None:
        try:
            with app.app_context(), tenant_scope(tenant.id):
                mine = set()
                for number in range(rounds):
                    barrier.wait(timeout=10)  # both tenants inside a transaction at once
                    event = record_event(EventType.PING, {"n": number}, livemode=False)
                    mine.add(event.id)
                    db.session.commit()
                written[tenant.id] = mine
                seen[tenant.id] = _event_ids()
                db.session.remove()
        except BaseException as exc:  # surfaced in the main thread
            failures.append(exc)

    threads = [threading.Thread(target=write_and_read, args=(t,)) for t in tenants]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert not failures
    for tenant in tenants:
        assert len(written[tenant.id]) == rounds
        assert seen[tenant.id] == written[tenant.id]
    assert not written[tenants[0].id] & written[tenants[1].id]


def test_pooled_connection_carries_nothing_into_the_next_tenants_request(
    database_url, redis_url, tenant_factory
):
    probe_app = create_app(make_config(database_url, redis_url, DB_POOL_SIZE="1"))
    probe = Blueprint("probe", __name__)

    @probe.get("/v1/probe")
    def probe_view():
        row = db.session.execute(
            text("SELECT pg_backend_pid(), current_setting('search_path'), count(*) FROM events")
        ).one()
        record_event(EventType.PING, {}, livemode=False)
        db.session.commit()
        return jsonify(pid=row[0], search_path=row[1], events=row[2])

    unscoped = Blueprint("unscoped", __name__, authenticated=False)

    @unscoped.get("/probe-unscoped")
    def unscoped_view():
        row = db.session.execute(
            text("SELECT pg_backend_pid(), current_setting('search_path')")
        ).one()
        return jsonify(pid=row[0], search_path=row[1])

    probe_app.register_blueprint(probe)
    probe_app.register_blueprint(unscoped)
    client = probe_app.test_client()
    alpha, beta = tenant_factory("Alpha Ltd"), tenant_factory("Beta Ltd")

    def call(tenant):
        return client.get("/v1/probe", headers={"Authorization": f"Bearer {tenant.secret}"}).json

    try:
        first_alpha = call(alpha)
        first_beta = call(beta)
        second_alpha = call(alpha)
        between = client.get("/probe-unscoped").json
    finally:
        reset_state(probe_app)
        with probe_app.app_context():
            db.engine.dispose()

    # One pooled connection served every request ...
    assert first_alpha["pid"] == first_beta["pid"] == second_alpha["pid"] == between["pid"]
    # ... yet each request saw only its own tenant's schema and rows.
    assert first_alpha["search_path"] == alpha.schema
    assert first_beta["search_path"] == beta.schema
    assert (first_alpha["events"], first_beta["events"], second_alpha["events"]) == (0, 0, 1)
    assert between["search_path"] == "public"


def test_tenant_table_outside_a_scope_fails_loudly(app_context, tenant):
    with pytest.raises(ProgrammingError, match='relation "events" does not exist'):
        db.session.execute(select(func.count()).select_from(Event)).scalar()
    db.session.rollback()

    with pytest.raises(TenantScopeError):
        record_event(EventType.PING, {}, livemode=False)


def test_raw_sql_inside_a_scope_hits_that_tenants_schema(app_context, tenant_factory):
    alpha, beta = tenant_factory("Alpha Ltd"), tenant_factory("Beta Ltd")

    with tenant_scope(alpha.id):
        db.session.execute(
            text(
                "INSERT INTO events (id, type, livemode, data) "
                "VALUES ('evt_raw', 'test.raw', false, '{}')"
            )
        )
        db.session.commit()

    counts = {
        schema: db.session.execute(text(f'SELECT count(*) FROM "{schema}".events')).scalar()
        for schema in (alpha.schema, beta.schema)
    }
    assert counts == {alpha.schema: 1, beta.schema: 0}


def test_scope_survives_commits(app_context, tenant):
    with tenant_scope(tenant.id):
        record_event(EventType.PING, {}, livemode=False)
        db.session.commit()
        record_event(EventType.PING, {}, livemode=False)
        db.session.commit()
        path = db.session.execute(text("SELECT current_setting('search_path')")).scalar()
        assert path == tenant.schema
        assert len(_event_ids()) == 2


def test_switching_tenant_inside_an_open_transaction_raises(app_context, tenant_factory):
    alpha, beta = tenant_factory("Alpha Ltd"), tenant_factory("Beta Ltd")

    with tenant_scope(alpha.id):
        record_event(EventType.PING, {}, livemode=False)
        db.session.flush()
        with pytest.raises(TenantScopeError, match="open transaction"), tenant_scope(beta.id):
            pass


def test_entering_a_scope_on_an_open_platform_transaction_raises(app_context, tenant):
    db.session.execute(text("SELECT 1"))
    with pytest.raises(TenantScopeError), tenant_scope(tenant.id):
        pass
    db.session.rollback()


def test_leaving_a_scope_discards_uncommitted_work_and_the_binding(app_context, tenant):
    with tenant_scope(tenant.id):
        record_event(EventType.PING, {}, livemode=False)
        db.session.flush()

    assert current_tenant() is None
    assert not db.session().in_transaction()
    with tenant_scope(tenant.id):
        assert _event_ids() == set()
    path = db.session.execute(text("SELECT current_setting('search_path')")).scalar()
    assert path == "public"


@pytest.mark.parametrize(
    "tenant_id",
    ["ten_x", "acme", "ten_01ARZ3NDEKTSV4RRFFQ69G5FAV", 'ten_01arz3ndektsv4rrffq69g5fa"'],
)
def test_unsafe_tenant_ids_never_reach_sql(app_context, tenant_id):
    with pytest.raises(TenantScopeError), tenant_scope(tenant_id):
        pass
