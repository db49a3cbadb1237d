"""The public site: landing, pricing from the plan catalog, sign-up through the form (with a
card through Stripe.js where Stripe is on), member sign-in with optional TOTP, sign-out and
invite links."""

from __future__ import annotations

import dataclasses
import re
import secrets

import pytest
import requests
from sqlalchemy import select, text

from core.extensions import db
from core.unit_of_work import unit_of_work
from tenants import members
from tenants.models import Member, MemberRole, Tenant
from tests.accounts import Clock
from tests.frontend.conftest import (
    ALL_ROLES,
    HTML,
    MEMBER_PASSWORD,
    add_member,
    csrf_token,
    owner_id,
    post_form,
)

SIGNED_IN_MEMBERS = {"owner": 302, "developer": 302, "viewer": 302}
ACCESS = [
    ("/", {role: 200 for role in ALL_ROLES}),
    ("/pricing", {role: 200 for role in ALL_ROLES}),
    # A signed-in member is sent on to the dashboard; staff and visitors get the forms.
    ("/signup", {**{role: 200 for role in ALL_ROLES}, **SIGNED_IN_MEMBERS}),
    ("/login", {**{role: 200 for role in ALL_ROLES}, **SIGNED_IN_MEMBERS}),
    # The code step without a password step first: back to the start.
    ("/login/totp", {role: 302 for role in ALL_ROLES}),
]


def test_access(check_access):
    check_access(ACCESS)


def new_email() -> str:
    return f"owner-{secrets.token_hex(4)}@example.co.ke"


def signup_form(**overrides) -> dict:
    return {
        "business_name": "Mama Mboga Ltd",
        "email": new_email(),
        "password": "s3cure-Passw0rd",
        "plan": "sandbox",
        **overrides,
    }


def sign_in_form(client, email: str, password: str = MEMBER_PASSWORD, path: str = "/login"):
    return post_form(client, path, {"email": email, "password": password})


def enable_totp(app, member_id: str, clock: Clock) -> str:
    import pyotp

    secret = pyotp.random_base32()
    with app.app_context():
        with unit_of_work():
            members.confirm_totp(member_id, secret, clock.code(secret))
        db.session.remove()
    return secret


# --- landing and pricing ------------------------------------------------------------------


def test_landing_says_what_lango_does_and_links_on(client):
    page = client.get("/", headers=HTML).get_data(as_text=True)
    assert "M-Pesa" in page and "STK push" in page
    assert "webhooks" in page and "Self-hostable" in page
    for link in ('href="/pricing"', 'href="/docs"', 'href="/signup"'):
        assert link in page


def test_pricing_lists_every_active_plan_of_the_catalog(app, client):
    from billing.models import Plan
    from billing.subscriptions import list_plans

    with app.app_context():
        extra = Plan(
            code=f"bulk{secrets.token_hex(3)}",
            name="Bulk Wholesale",
            monthly_price=45_000,
            included_pushes=100_000,
            overage_price=1,
            rate_limit="200 per second",
            max_webhook_endpoints=25,
            livemode_allowed=True,
            test_allowance=100_000,
            active=True,
            position=99,
        )
        retired = Plan(
            code=f"old{secrets.token_hex(3)}",
            name="Retired Plan",
            monthly_price=1,
            included_pushes=1,
            overage_price=None,
            rate_limit="1 per second",
            max_webhook_endpoints=1,
            livemode_allowed=True,
            test_allowance=1,
            active=False,
            position=100,
        )
        db.session.add_all([extra, retired])
        db.session.commit()
        plans = [(p.name, p.monthly_price, p.livemode_allowed) for p in list_plans()]
        codes = (extra.code, retired.code)
        db.session.remove()
    try:
        page = client.get("/pricing", headers=HTML).get_data(as_text=True)
    finally:
        with app.app_context():
            db.session.execute(
                text("DELETE FROM public.plans WHERE code = ANY(:codes)"), {"codes": list(codes)}
            )
            db.session.commit()
            db.session.remove()
    assert len(plans) >= 4
    for name, price, _live in plans:
        assert name in page
        assert (f"KES {price:,}" if price else "Free") in page
    assert "Retired Plan" not in page
    assert "KES 45,000" in page and "100,000 included" in page and "KES 1 per push" in page
    assert "200 per second per account" in page
    # The free sandbox plan is marked as test-only.
    assert "Test mode only" in page
    assert 'href="/signup?plan=starter"' in page


# --- sign-up ------------------------------------------------------------------------------


def test_signup_through_the_form_lands_on_the_dashboard_signed_in(app, client):
    form = signup_form(plan="starter")
    page = client.get("/signup", headers=HTML).get_data(as_text=True)
    assert "Create account" in page

    response = post_form(client, "/signup", form)

    assert response.status_code == 302, response.get_data(as_text=True)[:2000]
    assert response.headers["Location"] == "/dashboard"
    dashboard = client.get("/dashboard", headers=HTML)
    assert dashboard.status_code == 200
    body = dashboard.get_data(as_text=True)
    assert "Mama Mboga Ltd" in body and "Welcome to Lango" in body and "API keys" in body
    assert "Your plan starts once its first month is paid" in body
    with app.app_context():
        owner = db.session.scalar(select(Member).where(Member.email == form["email"]))
        assert owner.role is MemberRole.OWNER
        tenant = db.session.get(Tenant, owner.tenant_id)
        # No Stripe here: the starter plan waits for its first invoice to be paid.
        assert (tenant.business_name, tenant.plan) == ("Mama Mboga Ltd", "sandbox")
        schema = db.session.scalar(
            text("SELECT nspname FROM pg_namespace WHERE nspname = :s"), {"s": tenant.schema_name}
        )
        assert schema == tenant.schema_name
        db.session.remove()
    # Nothing secret rides in the session cookie.
    cookie = client.get_cookie("session").value
    assert "sk_test_" not in cookie


def test_signup_preselects_the_plan_from_pricing(client):
    page = client.get("/signup?plan=growth", headers=HTML).get_data(as_text=True)
    assert re.search(r'<option[^>]*selected[^>]*value="growth"|value="growth"[^>]*selected', page)


def test_signup_errors_name_the_field_and_keep_what_was_typed_but_the_password(client):
    response = post_form(
        client,
        "/signup",
        signup_form(business_name="Kibanda Foods", email="not-an-email", password="short"),
    )

    assert response.status_code == 400
    page = response.get_data(as_text=True)
    assert "Email: Enter an email address" in page
    assert "Password: Field must be between 10 and 128 characters long." in page
    assert 'value="Kibanda Foods"' in page and 'value="not-an-email"' in page
    assert 'value="short"' not in page


def test_signup_applies_the_apis_password_rules(client):
    response = post_form(client, "/signup", signup_form(password="password123"))
    assert response.status_code == 400
    assert "Password: This password is too easy to guess." in response.get_data(as_text=True)


def test_signup_refuses_an_unknown_plan(client):
    response = post_form(client, "/signup", signup_form(plan="platinum"))
    assert response.status_code == 400
    assert "Plan: Not a valid choice" in response.get_data(as_text=True)


def test_signup_with_a_taken_email_is_a_409_with_the_message(app, client, tenant):
    response = post_form(client, "/signup", signup_form(email=tenant.email.upper()))

    assert response.status_code == 409
    page = response.get_data(as_text=True)
    assert "Email: An account with this email already exists." in page
    assert f'value="{tenant.email.upper()}"' in page
    with app.app_context():
        assert db.session.scalar(text("SELECT count(*) FROM public.tenants")) == 1
        db.session.remove()


# --- paid plans with Stripe ---------------------------------------------------------------


@pytest.fixture
def stripe_cards(app, stripe_billing, monkeypatch):
    """Stripe billing on localstripe, with a publishable key and localstripe's Stripe.js."""
    settings = app.extensions["lango.settings"]
    monkeypatch.setitem(
        app.extensions,
        "lango.settings",
        dataclasses.replace(
            settings,
            STRIPE_PUBLISHABLE_KEY="pk_test_lango_localstripe",
            STRIPE_JS_URL=f"{stripe_billing.url}/js.stripe.com/v3/",
        ),
    )
    return stripe_billing


def test_without_stripe_the_signup_page_loads_no_stripe_js_and_offers_m_pesa(client):
    page = client.get("/signup", headers=HTML).get_data(as_text=True)
    assert "js.stripe.com" not in page and "signup.js" not in page
    assert "pay each invoice by M-Pesa from the Billing page" in page


def test_with_stripe_the_signup_page_loads_stripe_js_from_the_setting(client, stripe_cards):
    page = client.get("/signup", headers=HTML).get_data(as_text=True)

    script = f'<script src="{stripe_cards.url}/js.stripe.com/v3/"></script>'
    assert script in page
    assert 'src="/assets/signup.js"' in page
    assert 'data-stripe-key="pk_test_lango_localstripe"' in page
    assert 'data-paid="1"' in page and 'name="payment_method"' in page
    # The stand-in Stripe.js is really served where the page points.
    served = requests.get(f"{stripe_cards.url}/js.stripe.com/v3/", timeout=10)
    assert served.status_code == 200 and "Stripe = " in served.text
    assert client.get("/assets/signup.js").status_code == 200


def test_a_card_signup_passes_the_payment_method_to_stripe(app, client, stripe_cards):
    from billing.subscriptions import current_subscription

    form = signup_form(plan="starter", pay_with="card", payment_method="pm_card_visa")
    response = post_form(client, "/signup", form)

    assert response.status_code == 302, response.get_data(as_text=True)[:2000]
    with app.app_context():
        owner = db.session.scalar(select(Member).where(Member.email == form["email"]))
        subscription, _plan = current_subscription(owner.tenant_id)
        assert subscription.status.value == "active"
        subscription_id = subscription.stripe_subscription_id
        db.session.remove()
    in_stripe = stripe_cards.client().v1.subscriptions.retrieve(subscription_id)
    assert in_stripe.status == "active"


def test_a_paid_plan_by_card_needs_the_card(app, client, stripe_cards):
    response = post_form(client, "/signup", signup_form(plan="starter", pay_with="card"))
    assert response.status_code == 400
    assert "Enter your card details, or choose to pay by M-Pesa." in response.get_data(as_text=True)


def test_a_declined_card_is_a_402_on_the_card_field_and_creates_nothing(app, client, stripe_cards):
    form = signup_form(
        plan="starter", pay_with="card", payment_method="pm_card_visa_chargeDeclined"
    )
    response = post_form(client, "/signup", form)

    assert response.status_code == 402
    page = response.get_data(as_text=True)
    assert "Card: " in page and "declined" in page
    assert 'value="pm_card_visa_chargeDeclined"' not in page
    with app.app_context():
        assert db.session.scalar(select(Member).where(Member.email == form["email"])) is None
        db.session.remove()


def test_paying_by_m_pesa_signs_up_without_a_card(app, client, stripe_cards):
    form = signup_form(plan="starter", pay_with="mpesa", payment_method="pm_card_visa")
    response = post_form(client, "/signup", form)

    assert response.status_code == 302, response.get_data(as_text=True)[:2000]
    with app.app_context():
        from billing.subscriptions import current_subscription

        owner = db.session.scalar(select(Member).where(Member.email == form["email"]))
        subscription, _plan = current_subscription(owner.tenant_id)
        # No card went to Stripe: nothing is charged, and the plan waits for its payment
        # from the billing page (live mode stays off meanwhile; test mode works).
        assert subscription.stripe_subscription_id is None
        assert subscription.status.value == "incomplete"
        db.session.remove()


# --- sign-in and sign-out -----------------------------------------------------------------


def test_sign_in_with_the_right_password(app, client, tenant):
    response = sign_in_form(client, tenant.email, "s3cure-Passw0rd")

    assert response.status_code == 302
    assert response.headers["Location"] == "/dashboard"
    assert client.get("/dashboard", headers=HTML).status_code == 200


@pytest.mark.parametrize("who", ["wrong_password", "unknown_email"])
def test_sign_in_refuses_wrong_credentials_alike(client, tenant, who):
    email = tenant.email if who == "wrong_password" else "nobody@example.co.ke"
    response = sign_in_form(client, email, "not-the-password")

    assert response.status_code == 401
    page = response.get_data(as_text=True)
    assert "Wrong email or password." in page
    assert 'value="not-the-password"' not in page
    assert client.get("/dashboard", headers=HTML).status_code == 302


def test_sign_in_follows_next_but_only_on_this_site(client, tenant):
    response = sign_in_form(
        client, tenant.email, "s3cure-Passw0rd", path="/login?next=/dashboard/team"
    )
    assert response.headers["Location"] == "/dashboard/team"
    other = client.application.test_client()
    response = sign_in_form(
        other, tenant.email, "s3cure-Passw0rd", path="/login?next=https://evil.example/"
    )
    assert response.headers["Location"] == "/dashboard"


def test_a_dashboard_page_sends_a_visitor_to_sign_in_and_back(client, tenant):
    response = client.get("/dashboard/team", headers=HTML)
    assert response.status_code == 302
    assert response.headers["Location"] == "/login?next=/dashboard/team"


def test_sign_in_with_totp_needs_the_code(app, client, tenant, member_clock):
    secret = enable_totp(app, owner_id(app, tenant.id), member_clock)
    member_clock.advance(30)

    response = sign_in_form(client, tenant.email, "s3cure-Passw0rd")
    assert response.status_code == 302
    assert response.headers["Location"] == "/login/totp"
    # The password step alone signs nobody in.
    assert client.get("/dashboard", headers=HTML).status_code == 302
    assert post_form(client, "/login/totp", {"code": "000000"}).status_code == 401

    response = post_form(client, "/login/totp", {"code": member_clock.code(secret)})
    assert response.status_code == 302
    assert response.headers["Location"] == "/dashboard"
    assert client.get("/dashboard", headers=HTML).status_code == 200


def test_a_totp_code_works_once(app, client, tenant, member_clock):
    secret = enable_totp(app, owner_id(app, tenant.id), member_clock)
    member_clock.advance(30)
    code = member_clock.code(secret)
    sign_in_form(client, tenant.email, "s3cure-Passw0rd")
    assert post_form(client, "/login/totp", {"code": code}).status_code == 302

    other = app.test_client()
    sign_in_form(other, tenant.email, "s3cure-Passw0rd")
    response = post_form(other, "/login/totp", {"code": code})
    assert response.status_code == 401
    assert "already used" in response.get_data(as_text=True)


def test_the_code_step_expires(app, client, tenant, member_clock):
    enable_totp(app, owner_id(app, tenant.id), member_clock)
    sign_in_form(client, tenant.email, "s3cure-Passw0rd")
    member_clock.advance(6 * 60)
    response = post_form(client, "/login/totp", {"code": "123456"})
    assert response.status_code == 302
    assert response.headers["Location"] == "/login"


def test_sign_out_ends_the_session_even_for_a_copied_cookie(app, client, tenant):
    sign_in_form(client, tenant.email, "s3cure-Passw0rd")
    copy = app.test_client()
    copy.set_cookie("session", client.get_cookie("session").value)
    assert copy.get("/dashboard", headers=HTML).status_code == 200

    response = post_form(client, "/logout")

    assert response.status_code == 302 and response.headers["Location"] == "/login"
    assert client.get("/dashboard", headers=HTML).status_code == 302
    assert copy.get("/dashboard", headers=HTML).status_code == 302


def test_sign_in_is_rate_limited_per_ip(app, client, tenant, monkeypatch):
    monkeypatch.setitem(app.config, "MEMBER_LOGIN_RATELIMIT", "3 per minute")
    for _ in range(3):
        assert sign_in_form(client, tenant.email, "nope-nope-nope").status_code == 401
    response = sign_in_form(client, tenant.email, "s3cure-Passw0rd")
    assert response.status_code == 429
    assert "Too many requests" in response.get_data(as_text=True)


# --- invite links -------------------------------------------------------------------------


def make_invite(app, tenant_id: str, email: str, role: str = "developer") -> str:
    with app.app_context():
        owner = db.session.get(Member, owner_id(app, tenant_id))
        with unit_of_work():
            _invite, token = members.invite_member(tenant_id, email, role, owner)
        db.session.remove()
    return token


def test_an_invite_link_shows_the_team_and_signs_the_new_member_in(app, client, tenant):
    email = new_email()
    token = make_invite(app, tenant.id, email, "viewer")

    page = client.get(f"/invite/{token}", headers=HTML)
    assert page.status_code == 200
    body = page.get_data(as_text=True)
    assert "Duka Ltd" in body and email in body and "viewer" in body
    assert page.headers["Referrer-Policy"] == "no-referrer"

    response = post_form(
        client, f"/invite/{token}", {"password": "another-Passw0rd", "confirm": "another-Passw0rd"}
    )
    assert response.status_code == 302 and response.headers["Location"] == "/dashboard"
    assert client.get("/dashboard/account", headers=HTML).status_code == 200

    # The new member signs in with their own password, as a viewer.
    fresh = app.test_client()
    assert sign_in_form(fresh, email, "another-Passw0rd").status_code == 302
    account = fresh.get("/dashboard/account", headers=HTML).get_data(as_text=True)
    assert email in account and "viewer" in account


def test_an_invite_password_must_be_good_and_match(app, client, tenant):
    token = make_invite(app, tenant.id, new_email())
    response = post_form(client, f"/invite/{token}", {"password": "password123", "confirm": "x"})
    assert response.status_code == 400
    assert "The passwords differ." in response.get_data(as_text=True)
    response = post_form(
        client, f"/invite/{token}", {"password": "password123", "confirm": "password123"}
    )
    assert response.status_code == 400
    assert "too easy to guess" in response.get_data(as_text=True)


def test_a_used_invite_link_is_refused(app, client, tenant):
    token = make_invite(app, tenant.id, new_email())
    form = {"password": "another-Passw0rd", "confirm": "another-Passw0rd"}
    assert post_form(client, f"/invite/{token}", form).status_code == 302

    again = app.test_client()
    for response in (
        again.get(f"/invite/{token}", headers=HTML),
        post_form(again, f"/invite/{token}", form),
    ):
        assert response.status_code == 404
        assert "invalid, has expired or was already used" in response.get_data(as_text=True)


def test_an_expired_or_unknown_invite_link_is_refused(app, client, tenant):
    from tenants.models import MemberInvite

    token = make_invite(app, tenant.id, new_email())
    with app.app_context():
        db.session.execute(
            MemberInvite.__table__.update().values(expires_at=text("now() - interval '1 minute'"))
        )
        db.session.commit()
        db.session.remove()
    for path in (f"/invite/{token}", "/invite/not-a-token"):
        response = client.get(path, headers=HTML)
        assert response.status_code == 404
        assert "invalid, has expired or was already used" in response.get_data(as_text=True)


def test_a_signed_in_member_going_to_sign_in_goes_to_the_dashboard(sign_in):
    client = sign_in("developer").client
    response = client.get("/login", headers=HTML)
    assert response.status_code == 302 and response.headers["Location"] == "/dashboard"
    assert csrf_token(client)


def test_a_member_of_a_team_can_sign_in_with_a_role(app, tenant):
    email = new_email()
    add_member(app, tenant.id, "developer", email=email)
    client = app.test_client()
    assert sign_in_form(client, email).status_code == 302
    account = client.get("/dashboard/account", headers=HTML).get_data(as_text=True)
    assert email in account and '<span class="role">developer</span>' in account


def test_the_api_docs_page_fits_phones_and_leads_back_to_the_site(client):
    page = client.get("/docs").get_data(as_text=True)
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in page
    assert 'rel="icon" href="/assets/favicon.svg"' in page
    assert 'class="brand" href="/"' in page
    assert "swagger-ui-bundle.js" in page and "/openapi.json" in page
