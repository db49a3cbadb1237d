from sqlalchemy import text

from core.extensions import db
from core.migrations import tenant_head

VALID = {
    "business_name": "Mama Mboga Ltd",
    "email": "Owner@Example.co.ke",
    "password": "s3cure-Passw0rd",
}


def test_signup_returns_tenant_and_a_test_key_shown_once(client):
    response = client.post("/v1/signup", json=VALID)

    assert response.status_code == 201
    body = response.get_json()
    assert body["tenant"]["id"].startswith("ten_")
    assert body["tenant"]["status"] == "active"
    assert body["tenant"]["plan"] == "sandbox"
    assert body["tenant"]["live_enabled"] is False
    key = body["api_key"]
    assert key["secret"].startswith("sk_test_") and len(key["secret"]) == 40
    assert key["prefix"] == key["secret"][:12]
    assert key["livemode"] is False
    assert key["created"].endswith("Z")
    assert response.headers["Request-Id"].startswith("req_")


def test_signup_key_authenticates_and_tenant_schema_is_at_head(app, client):
    body = client.post("/v1/signup", json=VALID).get_json()

    me = client.get("/v1/tenant", headers={"Authorization": f"Bearer {body['api_key']['secret']}"})

    assert me.status_code == 200
    assert me.get_json()["tenant"]["id"] == body["tenant"]["id"]
    assert me.get_json()["livemode"] is False
    schema = "t_" + body["tenant"]["id"].split("_", 1)[1]
    with app.app_context():
        tables = (
            db.session.execute(
                text("SELECT table_name FROM information_schema.tables WHERE table_schema = :s"),
                {"s": schema},
            )
            .scalars()
            .all()
        )
        version = db.session.execute(
            text(f'SELECT version_num FROM "{schema}".alembic_version')
        ).scalar()
        registered = db.session.execute(
            text("SELECT schema_revision FROM public.tenants WHERE id = :id"),
            {"id": body["tenant"]["id"]},
        ).scalar()
    assert "events" in tables
    assert version == registered == tenant_head()


def test_secret_is_stored_only_as_a_hash(app, client):
    secret = client.post("/v1/signup", json=VALID).get_json()["api_key"]["secret"]
    with app.app_context():
        dump = (
            db.session.execute(text("SELECT row_to_json(k)::text FROM public.api_keys k"))
            .scalars()
            .all()
        )
    assert dump and all(secret not in row for row in dump)


def test_password_is_hashed_with_argon2(app, client):
    client.post("/v1/signup", json=VALID)
    with app.app_context():
        stored = db.session.execute(text("SELECT password_hash FROM public.members")).scalar()
    assert stored.startswith("$argon2id$") and VALID["password"] not in stored


def test_duplicate_email_is_409_whatever_the_case(client):
    assert client.post("/v1/signup", json=VALID).status_code == 201
    again = client.post("/v1/signup", json={**VALID, "email": "owner@example.CO.KE"})

    assert again.status_code == 409
    assert again.get_json()["error"]["code"] == "email_taken"
    assert again.get_json()["error"]["param"] == "email"


def test_invalid_signup_names_every_field(client):
    response = client.post(
        "/v1/signup", json={"business_name": "", "email": "not-an-email", "password": "short"}
    )

    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["code"] == "parameter_invalid"
    assert set(error["errors"]) == {"business_name", "email", "password"}


def test_missing_fields_are_parameter_missing(client):
    error = client.post("/v1/signup", json={}).get_json()["error"]
    assert error["code"] == "parameter_missing"
    assert set(error["errors"]) == {"business_name", "email", "password"}


def test_weak_password_is_refused(client):
    response = client.post("/v1/signup", json={**VALID, "password": "aaaaaaaaaaaa"})
    assert response.status_code == 400
    assert response.get_json()["error"]["param"] == "password"


def test_unknown_plan_is_refused(client):
    response = client.post("/v1/signup", json={**VALID, "plan": "platinum"})
    assert response.status_code == 400
    assert response.get_json()["error"]["param"] == "plan"


def test_failed_signup_leaves_no_tenant_or_schema(app, client, monkeypatch):
    import tenants.service

    def broken(connection, schema):
        connection.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        raise RuntimeError("disk full")

    monkeypatch.setattr(tenants.service, "provision_schema", broken)
    response = client.post("/v1/signup", json=VALID)

    assert response.status_code == 500
    assert response.get_json()["error"]["code"] == "internal_error"
    with app.app_context():
        assert db.session.execute(text("SELECT count(*) FROM public.tenants")).scalar() == 0
        schemas = db.session.execute(
            text("SELECT count(*) FROM pg_namespace WHERE nspname LIKE 't\\_%'")
        ).scalar()
    assert schemas == 0


def test_signup_is_rate_limited_per_client_ip(app, client):
    from core.extensions import limiter

    settings = app.extensions["lango.settings"]
    object.__setattr__(settings, "RATELIMIT_SIGNUP", "2 per hour")
    try:
        codes = [
            client.post("/v1/signup", json={**VALID, "email": f"o{i}@example.co.ke"}).status_code
            for i in range(3)
        ]
        limited = client.post("/v1/signup", json={**VALID, "email": "o9@example.co.ke"})
    finally:
        object.__setattr__(settings, "RATELIMIT_SIGNUP", "10000 per hour")
        limiter.reset()
    assert codes == [201, 201, 429]
    assert limited.status_code == 429
    assert limited.get_json()["error"]["code"] == "rate_limited"
    assert int(limited.headers["Retry-After"]) > 0


def test_concurrent_signups_with_one_email_make_one_tenant_and_leave_the_loser_usable(app):
    """Both pass the email check; the unique index decides. The loser's insert is undone in
    its savepoint alone: EmailTaken, and its transaction can still commit other work."""
    import threading

    from core.unit_of_work import unit_of_work
    from tenants.service import EmailTaken, sign_up

    barrier = threading.Barrier(2)
    outcomes = []

    def sign_up_once(name: str) -> None:
        with app.app_context():
            barrier.wait()
            try:
                with unit_of_work():
                    try:
                        sign_up(name, "race@example.co.ke", VALID["password"])
                        outcomes.append("created")
                    except EmailTaken:
                        db.session.execute(text("SELECT 1"))  # the transaction goes on
                        outcomes.append("email_taken")
            finally:
                db.session.remove()

    threads = [threading.Thread(target=sign_up_once, args=(f"Race {n}",)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert sorted(outcomes) == ["created", "email_taken"]
    with app.app_context():
        assert db.session.execute(text("SELECT count(*) FROM public.tenants")).scalar() == 1
        schemas = db.session.execute(
            text("SELECT count(*) FROM pg_namespace WHERE nspname LIKE 't\\_%'")
        ).scalar()
        db.session.remove()
    assert schemas == 1
