"""HTTP endpoints for billing. Parse, call the service, serialise.

Sections: plans, subscription and usage; invoices; the Stripe webhook.
"""

from __future__ import annotations

from core.api import Blueprint
from core.extensions import limiter

plans = Blueprint("plans", __name__, description="The plan catalog", authenticated=False)
subscription = Blueprint("subscription", __name__, description="Your plan, usage and billing")
invoices = Blueprint("invoices", __name__, description="What each period cost, and paying it")
stripe_callbacks = Blueprint(
    "stripe_callbacks", __name__, description="Where Stripe posts events", authenticated=False
)
limiter.exempt(stripe_callbacks)

# --- plans, subscription and usage -----------------------------------------------------

# --- invoices --------------------------------------------------------------------------

# --- Stripe webhook --------------------------------------------------------------------
