"""Dashboard API keys: create (the secret shown once, in the answer itself), list, roll with
a grace period, revoke — for owners and developers, in the mode on screen, in their own
tenant only."""

from __future__ import annotations

import re

from core.unit_of_work import unit_of_work
from tests.frontend.conftest import HTML, member_page, post_form

ACCESS = [("/dashboard/keys", member_page(viewer=403))]
SECRET = re.compile(r"sk_(?:test|live)_[A-Za-z0-9]{32}")


def test_access(check_access):
    check_access(ACCESS)


def tenant_status(client, secret: str) -> int:
    return client.get("/v1/tenant", headers={"Authorization": f"Bearer {secret}"}).status_code


def key_rows(page: str) -> dict[str, str]:
    """{key id: its table row} of a keys page."""
    return dict(re.findall(r'<tr data-key="(key_[0-9a-z]+)">(.*?)</tr>', page, re.S))


def test_created_key_is_shown_once_then_only_its_prefix(client, sign_in):
    developer = sign_in("developer")

    response = post_form(developer.client, "/dashboard/keys", {"name": "Checkout server"})

    assert response.status_code == 201
    assert response.headers["Cache-Control"] == "no-store"
    page = response.get_data(as_text=True)
    secret = SECRET.search(page).group(0)
    assert f"<code data-copy-source>{secret}</code>" in page
    assert "data-copy" in page and "Checkout server" in page
    assert tenant_status(client, secret) == 200

    listing = developer.client.get("/dashboard/keys", headers=HTML).get_data(as_text=True)
    assert secret not in listing and not SECRET.search(listing)
    assert f"{secret[:12]}…{secret[-4:]}" in listing
    assert "Checkout server" in listing
    with developer.client.session_transaction() as session:
        assert secret not in repr(dict(session))


def test_a_key_needs_a_name(sign_in):
    response = post_form(sign_in("owner").client, "/dashboard/keys", {"name": ""})
    assert response.status_code == 400
    assert "Give the key a name" in response.get_data(as_text=True)


def test_revoked_key_stops_working_at_once(client, sign_in):
    owner = sign_in("owner")
    secret = owner.tenant.secret
    assert tenant_status(client, secret) == 200
    page = owner.client.get("/dashboard/keys", headers=HTML).get_data(as_text=True)
    (key_id,) = key_rows(page)
    assert 'data-confirm="Revoke this key? Apps using it stop working at once."' in page

    response = post_form(owner.client, f"/dashboard/keys/{key_id}/revoke")

    assert response.status_code == 302 and response.location == "/dashboard/keys"
    page = owner.client.get("/dashboard/keys", headers=HTML).get_data(as_text=True)
    assert "revoked; it no longer works" in page
    assert key_id not in key_rows(page)
    assert tenant_status(client, secret) == 401


def test_roll_without_grace_replaces_the_key_now(client, sign_in):
    owner = sign_in("developer")
    old = owner.tenant.secret
    response = post_form(
        owner.client, f"/dashboard/keys/{owner.tenant.key_id}/roll", {"grace_seconds": "0"}
    )
    assert response.status_code == 201
    page = response.get_data(as_text=True)
    new = SECRET.search(page).group(0)
    assert new != old and "stopped working now" in page
    assert tenant_status(client, old) == 401
    assert tenant_status(client, new) == 200


def test_roll_with_grace_keeps_the_old_key_for_a_while(client, sign_in):
    owner = sign_in("owner")
    old = owner.tenant.secret
    response = post_form(
        owner.client, f"/dashboard/keys/{owner.tenant.key_id}/roll", {"grace_seconds": "3600"}
    )
    assert response.status_code == 201
    page = response.get_data(as_text=True)
    new = SECRET.search(page).group(0)
    assert "keeps working for 1 hour" in page
    assert tenant_status(client, old) == 200 and tenant_status(client, new) == 200
    rows = key_rows(page)
    assert len(rows) == 2 and "(rolled)" in rows[owner.tenant.key_id]


def test_roll_refuses_a_grace_period_not_offered(sign_in):
    owner = sign_in("owner")
    response = post_form(
        owner.client, f"/dashboard/keys/{owner.tenant.key_id}/roll", {"grace_seconds": "999999"}
    )
    assert response.status_code == 400
    assert not SECRET.search(response.get_data(as_text=True))


def test_viewers_can_neither_see_nor_change_keys(client, sign_in):
    owner = sign_in("owner")
    viewer = sign_in("viewer", tenant=owner.tenant)
    key_id = owner.tenant.key_id
    assert post_form(viewer.client, "/dashboard/keys", {"name": "x"}).status_code == 403
    assert post_form(viewer.client, f"/dashboard/keys/{key_id}/revoke").status_code == 403
    roll = post_form(viewer.client, f"/dashboard/keys/{key_id}/roll", {"grace_seconds": "0"})
    assert roll.status_code == 403
    assert tenant_status(client, owner.tenant.secret) == 200


def test_another_tenants_key_is_404(client, sign_in):
    alpha = sign_in("owner")
    beta = sign_in("owner")
    theirs = beta.tenant.key_id
    assert theirs not in alpha.client.get("/dashboard/keys", headers=HTML).get_data(True)
    revoke = post_form(alpha.client, f"/dashboard/keys/{theirs}/revoke")
    assert revoke.status_code == 404
    roll = post_form(alpha.client, f"/dashboard/keys/{theirs}/roll", {"grace_seconds": "0"})
    assert roll.status_code == 404
    assert tenant_status(client, beta.tenant.secret) == 200


def test_live_mode_lists_live_keys_and_explains_why_none_can_be_made(sign_in):
    owner = sign_in("owner")
    post_form(owner.client, "/dashboard/mode", {"livemode": "on"})
    page = owner.client.get("/dashboard/keys", headers=HTML).get_data(as_text=True)
    assert owner.tenant.key_id not in page  # a test key
    assert "Live mode is not enabled for this account yet" in page
    assert "Create key</button>" not in page

    response = post_form(owner.client, "/dashboard/keys", {"name": "Live"})

    assert response.status_code == 403
    assert not SECRET.search(response.get_data(as_text=True))


def test_live_keys_once_live_mode_is_on(app, client, sign_in):
    from core.extensions import db
    from tenants.models import Tenant

    owner = sign_in("owner")
    with app.app_context():
        db.session.get(Tenant, owner.tenant.id).live_enabled = True
        db.session.commit()
        db.session.remove()
    post_form(owner.client, "/dashboard/mode", {"livemode": "on"})

    response = post_form(owner.client, "/dashboard/keys", {"name": "Live checkout"})

    assert response.status_code == 201
    secret = SECRET.search(response.get_data(as_text=True)).group(0)
    assert secret.startswith("sk_live_")
    assert client.get("/v1/tenant", headers={"Authorization": f"Bearer {secret}"}).get_json()[
        "livemode"
    ]


def test_the_dashboard_is_held_to_the_api_key_cap(app, sign_in):
    from tenants.service import MAX_ACTIVE_KEYS_PER_MODE, create_api_key

    developer = sign_in("developer")
    with app.app_context(), unit_of_work():
        for n in range(MAX_ACTIVE_KEYS_PER_MODE - 1):  # with the sign-up's key: at the cap
            create_api_key(developer.tenant.id, livemode=False, name=f"k{n}")

    response = post_form(developer.client, "/dashboard/keys", {"name": "One too many"})

    assert response.status_code == 409
    page = response.get_data(as_text=True)
    assert f"{MAX_ACTIVE_KEYS_PER_MODE} active keys" in page
    assert not SECRET.search(page)
