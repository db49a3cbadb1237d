"""The tenant dashboard: one blueprint, one module per section. Every page runs for a
signed-in member inside the tenant's schema (frontend.auth.member_area), in the mode the
switch in the header selects (test or live data, like API keys). A suspended tenant's
dashboard is read-only, as its API keys are refused (`refuse_changes_while_suspended`)."""

from __future__ import annotations

from flask import flash, g, redirect, request, session, url_for

from billing.dunning import SUSPENSION_REASON as UNPAID_INVOICE
from core.errors import TenantSuspended
from frontend.auth import SAFE_METHODS, member_area, page_blueprint, safe_next

bp = page_blueprint("dashboard", __name__, url_prefix="/dashboard")
member_area(bp)

# What a member of a suspended tenant may still change: which data the pages show, and
# their own sign-in (password, two-step sign-in: securing an account changes nothing the
# API guards). Signing out is the site's. Paying an invoice is allowed as the API allows
# it: while the suspension is for an unpaid invoice, which paying lifts.
ALLOWED_WHILE_SUSPENDED = frozenset(
    {
        "dashboard.switch_mode",
        "dashboard.account_password",
        "dashboard.account_totp",
        "dashboard.account_totp_disable",
    }
)
ALLOWED_WHILE_UNPAID = frozenset({"dashboard.billing_invoice_pay"})


@bp.before_request
def refuse_changes_while_suspended() -> None:
    """Every state-changing request of the dashboard, for a suspended tenant, is the 403
    page saying why (the banner on every page says it too) — unless allowed above. Runs
    after member_area, which loads the tenant afresh on each request, so a suspension
    bites at once."""
    if request.method in SAFE_METHODS or g.tenant.is_active:
        return
    if request.endpoint in ALLOWED_WHILE_SUSPENDED:
        return
    if g.tenant.suspended_reason == UNPAID_INVOICE:
        if request.endpoint in ALLOWED_WHILE_UNPAID:
            return
        raise TenantSuspended(
            "This account is suspended for an unpaid invoice, so the dashboard is read-only: "
            "pay the invoice under Billing to reinstate it."
        )
    raise TenantSuspended(
        "This account is suspended, so the dashboard is read-only until Lango reinstates "
        "it; contact support."
    )


@bp.post("/mode")
def switch_mode():
    """The test/live switch: which data every page shows, kept in the session."""
    livemode = request.form.get("livemode") == "on"
    session["livemode"] = livemode
    if livemode and not g.tenant.live_enabled:
        flash("Live mode is not enabled yet; you are viewing live data, which is empty.", "info")
    return redirect(safe_next(request.form.get("next"), url_for("dashboard.overview")))


# The sections register their routes on `bp`.
from frontend.dashboard import (  # noqa: E402, F401
    account,
    billing,
    console,
    keys,
    overview,
    payments,
    settings,
    team,
    webhooks,
)
