from datetime import UTC, datetime, timedelta

from sqlalchemy import text

from core.extensions import db
from core.tenancy import tenant_scope
from tenants.jobs import purge_idempotency_keys


def test_idempotency_keys_older_than_a_day_are_purged(app, api, tenant):
    for key in ("old", "new"):
        created = api.post(
            "/v1/webhook-endpoints",
            json={"url": f"https://hooks.example.com/{key}"},
            headers={"Idempotency-Key": key},
        )
        assert created.status_code == 201
    with app.app_context():
        with tenant_scope(tenant.id):
            db.session.execute(
                text("UPDATE idempotency_keys SET created_at = :then WHERE key = 'old'"),
                {"then": datetime.now(UTC) - timedelta(hours=25)},
            )
            db.session.commit()

        assert purge_idempotency_keys() == 1

        with tenant_scope(tenant.id):
            left = db.session.execute(text("SELECT key FROM idempotency_keys")).scalars().all()
    assert left == ["new"]
