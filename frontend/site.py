"""The public site: landing, pricing, sign-up, member sign-in (password, then a TOTP code for
members who turned it on), sign-out and invite links.

Sign-up runs the API's own rules (tenants.schemas.SignupRequestSchema, then
tenants.service.sign_up); a paid plan is paid by card through Stripe.js where Stripe is
configured with a publishable key, else (or by choice) by M-Pesa from the billing page.
The member sign-in mirrors the staff one (frontend.staff_login): the password step only
records a pending login in the session, which nothing but the code step accepts.
"""

from __future__ import annotations

from flask import current_app, flash, redirect, render_template, request, session, url_for
from flask_login import current_user, login_user, logout_user
from flask_wtf import FlaskForm
from marshmallow import ValidationError as SchemaError
from marshmallow import validate
from wtforms import (
    EmailField,
    HiddenField,
    PasswordField,
    RadioField,
    SelectField,
    StringField,
)
from wtforms import ValidationError as FieldError
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, EqualTo, Length, Optional

from billing import stripe_gateway
from billing.subscriptions import list_plans
from core.errors import LangoError
from core.extensions import db, limiter
from core.ratelimit import client_ip
from frontend.auth import page_blueprint, safe_next
from frontend.formatting import kes
from tenants import members
from tenants.models import Member
from tenants.schemas import SignupRequestSchema
from tenants.service import DEFAULT_PLAN, get_tenant, sign_up

bp = page_blueprint("site", __name__, static_folder="static", static_url_path="/assets")

# Sign-in attempts per client IP (both steps), and code attempts per pending member.
DEFAULT_LOGIN_RATELIMIT = "30 per minute"
DEFAULT_CODE_RATELIMIT = "10 per 5 minutes"
# The password step is good for this long; then the code step sends back to the start.
PENDING_LOGIN_SECONDS = 5 * 60
PAY_BY_CARD, PAY_BY_MPESA = "card", "mpesa"


# --- forms --------------------------------------------------------------------------------


def email_address(form, field) -> None:
    """The API's notion of an email address (marshmallow's), so the pages accept the same."""
    try:
        validate.Email()(field.data or "")
    except SchemaError:
        raise FieldError("Enter an email address like name@example.co.ke.") from None


class SignupForm(FlaskForm):
    business_name = StringField(
        "Business name", validators=[DataRequired(), Length(min=2, max=100)]
    )
    email = EmailField("Email", validators=[DataRequired(), Length(max=254), email_address])
    password = PasswordField("Password", validators=[DataRequired(), Length(min=10, max=128)])
    plan = SelectField("Plan", default=DEFAULT_PLAN)
    pay_with = RadioField(
        "Pay for a paid plan with",
        choices=[
            SelectChoice(PAY_BY_CARD, "Card"),
            SelectChoice(PAY_BY_MPESA, "M-Pesa (from the Billing page)"),
        ],
        default=PAY_BY_CARD,
        validators=[Optional()],
    )
    # Filled by static/signup.js with the pm_… id Stripe.js made from the card.
    payment_method = HiddenField("Card", validators=[Optional(), Length(max=255)])


class LoginForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired(), Length(max=254)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=200)])


class CodeForm(FlaskForm):
    code = StringField(
        "Authenticator code",
        validators=[DataRequired(), Length(min=6, max=7)],
        render_kw={"inputmode": "numeric", "autocomplete": "one-time-code"},
    )


class AcceptInviteForm(FlaskForm):
    password = PasswordField(
        "Choose a password", validators=[DataRequired(), Length(min=10, max=128)]
    )
    confirm = PasswordField(
        "Password again",
        validators=[DataRequired(), EqualTo("password", message="The passwords differ.")],
    )


def field_error(form: FlaskForm, error: LangoError) -> None:
    """Show a domain error on the form field it names (its `param`), else as a flash."""
    field = getattr(form, error.param, None) if error.param else None
    if field is not None and hasattr(field, "errors"):
        field.errors = [*field.errors, error.message]
    else:
        flash(error.message, "error")


# --- pages --------------------------------------------------------------------------------


@bp.get("/")
def landing():
    return render_template("site/landing.html", plans=list_plans())


@bp.get("/pricing")
def pricing():
    return render_template("site/pricing.html", plans=list_plans())


@bp.route("/signup", methods=["GET", "POST"])
def signup():
    if _signed_in_member():
        return redirect(url_for("dashboard.overview"))
    plans = list_plans()
    form = SignupForm()
    form.plan.choices = [_plan_choice(plan) for plan in plans]
    if request.method == "GET" and request.args.get("plan") in {p.code for p in plans}:
        form.plan.data = request.args["plan"]
    card = _card_payments()
    if form.validate_on_submit() and _passes_api_rules(form) and _has_payment(form, plans, card):
        paying_by_card = card and form.pay_with.data != PAY_BY_MPESA
        try:
            with db.session.begin_nested():
                result = sign_up(
                    form.business_name.data,
                    form.email.data,
                    form.password.data,
                    form.plan.data,
                    (form.payment_method.data or None) if paying_by_card else None,
                )
        except LangoError as error:
            field_error(form, error)
            return _signup_page(form, plans, card, error.status)
        _sign_in(result.owner)
        flash(
            f"Welcome to Lango, {result.tenant.business_name}! You are in test mode: pushes go "
            "to the Daraja sandbox and no money moves. Create an API key on the API keys page "
            "to call Lango from your code.",
            "success",
        )
        if result.tenant.plan != form.plan.data:
            flash(
                "Your plan starts once its first month is paid: pay its invoice by M-Pesa on "
                f"the Billing page. Until then you are on the free {result.tenant.plan} plan.",
                "warning",
            )
        return redirect(url_for("dashboard.overview"))
    return _signup_page(form, plans, card, 400 if form.errors else 200)


@bp.route("/login", methods=["GET", "POST"])
@limiter.limit(
    lambda: _limit("MEMBER_LOGIN_RATELIMIT", DEFAULT_LOGIN_RATELIMIT),
    key_func=lambda: "member-login:" + client_ip(),
    methods=["POST"],
)
def login():
    if _signed_in_member():
        return redirect(safe_next(request.args.get("next"), url_for("dashboard.overview")))
    form = LoginForm()
    if form.validate_on_submit():
        try:
            with db.session.begin_nested():
                member = members.authenticate_member(
                    form.email.data, form.password.data, client_address=client_ip()
                )
        except LangoError as error:
            flash(error.message, "error")
            return render_template("site/login.html", form=form), error.status, error.headers
        target = safe_next(request.args.get("next"), "")
        if members.has_totp(member):
            logout_user()
            session.clear()
            session["member_pending"] = {"id": member.id, "at": int(members.clock())}
            session["member_next"] = target
            return redirect(url_for("site.login_totp"))
        _sign_in(member)
        flash("Signed in.", "success")
        return redirect(target or url_for("dashboard.overview"))
    return render_template("site/login.html", form=form), 400 if form.errors else 200


@bp.route("/login/totp", methods=["GET", "POST"])
@limiter.limit(
    lambda: _limit("MEMBER_LOGIN_RATELIMIT", DEFAULT_LOGIN_RATELIMIT),
    key_func=lambda: "member-login:" + client_ip(),
    methods=["POST"],
)
@limiter.limit(
    lambda: _limit("MEMBER_CODE_RATELIMIT", DEFAULT_CODE_RATELIMIT),
    key_func=lambda: "member-code:" + str((session.get("member_pending") or {}).get("id")),
    methods=["POST"],
)
def login_totp():
    pending = session.get("member_pending") or {}
    if not pending or members.clock() - pending.get("at", 0) > PENDING_LOGIN_SECONDS:
        session.pop("member_pending", None)
        flash("Sign in with your password first.", "info")
        return redirect(url_for("site.login"))
    form = CodeForm()
    if form.validate_on_submit():
        try:
            with db.session.begin_nested():
                member = members.verify_member_totp(
                    pending["id"], form.code.data, client_address=client_ip()
                )
        except LangoError as error:
            flash(error.message, "error")
            return render_template("site/totp.html", form=form), error.status, error.headers
        target = session.get("member_next") or ""
        _sign_in(member)
        flash("Signed in.", "success")
        return redirect(target or url_for("dashboard.overview"))
    return render_template("site/totp.html", form=form), 400 if form.errors else 200


@bp.post("/logout")
def logout():
    """Ends the session everywhere: the member's session nonce is cleared, so a copy of the
    cookie signs in nobody."""
    user = current_user._get_current_object()
    if isinstance(user, Member):
        members.end_session(user.id)
    logout_user()
    session.clear()
    flash("Signed out.", "success")
    return redirect(url_for("site.login"))


@bp.route("/invite/<token>", methods=["GET", "POST"])
def invite(token: str):
    """Join a team from an invite link: an unknown, expired, revoked or used link is the
    404 page saying so (members.InviteInvalid)."""
    invitation = members.get_invite_by_token(token)
    tenant = get_tenant(invitation.tenant_id)
    form = AcceptInviteForm()
    status = 200
    if form.validate_on_submit():
        try:
            with db.session.begin_nested():
                member = members.accept_invite(token, form.password.data)
        except members.InviteInvalid:
            raise
        except LangoError as error:
            field_error(form, error)
            status = error.status
        else:
            _sign_in(member)
            flash(f"Welcome to the {tenant.business_name} team on Lango.", "success")
            return redirect(url_for("dashboard.overview"))
    elif form.errors:
        status = 400
    page = render_template("site/invite.html", form=form, invite=invitation, tenant=tenant)
    # The token is in this page's URL: keep it out of caches and Referer headers.
    return page, status, {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}


# --- internals ----------------------------------------------------------------------------


def _signed_in_member() -> bool:
    return isinstance(current_user._get_current_object(), Member)


def _sign_in(member: Member) -> None:
    """A fresh session for `member`: whatever the session held (a pending login, another
    user) is dropped, and the member's session nonce is new."""
    logout_user()
    session.clear()
    login_user(members.start_session(member), remember=False)


def _limit(name: str, default: str) -> str:
    return current_app.config.get(name, default)


def _settings():
    return current_app.extensions["lango.settings"]


def _plan_choice(plan) -> SelectChoice:
    price = f"{kes(plan.monthly_price)} a month" if plan.monthly_price else "free"
    label = f"{plan.name} — {price}" + ("" if plan.livemode_allowed else " (test mode only)")
    # signup.js shows the card field for paid plans only.
    return SelectChoice(plan.code, label, {"data-paid": "1"} if plan.monthly_price else {})


def _card_payments() -> bool:
    """Cards are taken on the page only with Stripe billing on and a publishable key."""
    return stripe_gateway.configured() and bool(_settings().STRIPE_PUBLISHABLE_KEY)


def _passes_api_rules(form: SignupForm) -> bool:
    """The API's sign-up validation (weak passwords, blank names …), on the form's fields."""
    problems = SignupRequestSchema().validate(
        {
            "business_name": form.business_name.data,
            "email": form.email.data,
            "password": form.password.data,
            "plan": form.plan.data,
        }
    )
    for name, messages in problems.items():
        field = getattr(form, name, None)
        target = field if field is not None and hasattr(field, "errors") else form.email
        target.errors = [*target.errors, *messages]
    return not problems


def _has_payment(form: SignupForm, plans: list, card: bool) -> bool:
    """Paying by card needs the card (signup.js fills `payment_method`; without scripts,
    choose M-Pesa)."""
    plan = next((p for p in plans if p.code == form.plan.data), None)
    if not card or plan is None or plan.monthly_price == 0:
        return True
    if form.pay_with.data == PAY_BY_MPESA or form.payment_method.data:
        return True
    form.payment_method.errors = [
        *form.payment_method.errors,
        "Enter your card details, or choose to pay by M-Pesa.",
    ]
    return False


def _signup_page(form: SignupForm, plans: list, card: bool, status: int):
    form.payment_method.data = ""  # a card id is used once: a new attempt makes a new one
    page = render_template(
        "site/signup.html",
        form=form,
        plans=plans,
        card_payments=card,
        stripe_key=_settings().STRIPE_PUBLISHABLE_KEY if card else "",
        stripe_js_url=_settings().STRIPE_JS_URL if card else "",
    )
    return page, status
