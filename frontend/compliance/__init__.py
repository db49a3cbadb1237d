"""The compliance console: audit log (search, CSV export, chain check), the fraud review
queue, fraud rules (with a dry run before saving) and KYC review — one blueprint, one module
per section, for staff with the compliance role (frontend.auth.staff_area).

Views are thin: a form in, one service call (compliance.console, compliance.dry_run,
compliance.audit, compliance.kyc — the same functions as /v1/admin), a flash, a redirect.
"""

from __future__ import annotations

from flask import flash, redirect, request, url_for
from flask_wtf import FlaskForm
from wtforms.fields.choices import SelectChoice

from core.errors import LangoError
from frontend.auth import page_blueprint, staff_area
from staff.models import StaffRole

bp = page_blueprint("compliance", __name__, url_prefix="/compliance")
staff_area(bp, StaffRole.COMPLIANCE)

PAGE_SIZE = 50
ALL = "all"


def cursor_args() -> dict:
    """The list pages' cursor (`starting_after` / `ending_before`) from the query string."""
    return {
        "starting_after": request.args.get("starting_after") or None,
        "ending_before": request.args.get("ending_before") or None,
    }


def show_error(form: FlaskForm, error: LangoError) -> None:
    """A service's error on the form field it names (e.g. `expression`), else as a flash."""
    field = getattr(form, error.param or "", None)
    if field is None:
        flash(error.message, "error")
        return
    field.errors = [*field.errors, error.message.removeprefix(f"{error.param}: ")]


def enum_choices(values, label=str) -> list[SelectChoice]:
    """A select's choices from an enum: each member's value, labelled by `label`."""
    return [SelectChoice(value.value, label(value.value)) for value in values]


@bp.get("")
def home():
    return redirect(url_for("compliance.audit"))


# The sections register their routes on `bp`.
from frontend.compliance import (  # noqa: E402, F401
    audit,
    fraud_cases,
    fraud_rules,
    kyc_review,
)
