"""The tenant dashboard: one blueprint, one module per section. Every page runs for a
signed-in member inside the tenant's schema (frontend.auth.member_area), in the mode the
switch in the header selects (test or live data, like API keys)."""

from __future__ import annotations

from flask import flash, g, redirect, request, session, url_for

from frontend.auth import member_area, page_blueprint, safe_next

bp = page_blueprint("dashboard", __name__, url_prefix="/dashboard")
member_area(bp)


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
