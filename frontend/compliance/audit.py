"""Compliance console: the audit log — search with filters, CSV export, and a check of the
hash chain."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from flask import (
    Response,
    flash,
    redirect,
    render_template,
    request,
    session,
    stream_with_context,
    url_for,
)
from flask_wtf import FlaskForm
from wtforms import SelectField, StringField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import Length, Optional, ValidationError

from compliance import console
from compliance.audit import ActorType, AuditAction
from compliance.audit_chain import configured_checkpoint_dir, verify_chain
from compliance.audit_keys import current_key_ring
from frontend.compliance import PAGE_SIZE, bp, cursor_args, enum_choices
from frontend.fields import EatDayField
from payments.reports import eat_day


class AuditFilterForm(FlaskForm):
    class Meta:
        csrf = False  # a search (GET) changes nothing

    tenant_id = StringField("Tenant id", [Optional(), Length(max=40)])
    actor_type = SelectField(
        "Actor type", choices=[SelectChoice("", "Any actor"), *enum_choices(ActorType)], default=""
    )
    actor_id = StringField("Actor id", [Optional(), Length(max=64)])
    action = SelectField(
        "Action", choices=[SelectChoice("", "Any action"), *enum_choices(AuditAction)], default=""
    )
    occurred_gte = EatDayField("From (EAT)")
    occurred_lte = EatDayField("To (EAT)")

    def validate_occurred_lte(self, field) -> None:
        if field.data and self.occurred_gte.data and field.data < self.occurred_gte.data:
            raise ValidationError("The end date is before the start date.")

    def filters(self) -> dict:
        """The service's filters: empty fields left out, EAT days as UTC bounds."""
        filters = {
            name: getattr(self, name).data.strip()
            for name in ("tenant_id", "actor_type", "actor_id", "action")
            if (getattr(self, name).data or "").strip()
        }
        if self.occurred_gte.data:
            filters["occurred_gte"] = eat_day(self.occurred_gte.data)[0]
        if self.occurred_lte.data:
            filters["occurred_lte"] = eat_day(self.occurred_lte.data)[1] - timedelta(microseconds=1)
        return filters


def diff_summary(diff: dict | None, limit: int = 140) -> str:
    """An entry's reason or changed fields in a line: `reason: …` / `outcome: block → review`."""
    if not isinstance(diff, dict):
        return ""
    before = diff.get("before") if isinstance(diff.get("before"), dict) else {}
    after = diff.get("after") if isinstance(diff.get("after"), dict) else {}
    parts = []
    for key, value in after.items():
        if key in before and before[key] == value:
            continue
        change = f"{_shown(before[key])} → {_shown(value)}" if key in before else _shown(value)
        parts.append(f"{key}: {change}")
    summary = "; ".join(parts)
    return summary if len(summary) <= limit else summary[: limit - 1] + "…"


def _shown(value) -> str:
    """A value as the CSV and the API write it (JSON: `false`, `["*"]`), text as itself."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


@bp.get("/audit")
def audit():
    form = AuditFilterForm(request.args)
    chain = session.pop("audit_chain", None)
    if not form.validate():
        return render_template("compliance/audit.html", form=form, page=None, chain=chain), 400
    page = console.search_audit_log(limit=PAGE_SIZE, **cursor_args(), **form.filters())
    names = console.tenant_names(entry.tenant_id for entry in page["data"])
    export_args = {k: v for k, v in request.args.items() if k not in cursor_args() and v}
    return render_template(
        "compliance/audit.html",
        form=form,
        page=page,
        names=names,
        chain=chain,
        export_url=url_for("compliance.audit_export", **export_args),
        diff_summary=diff_summary,
    )


@bp.get("/audit/export")
def audit_export():
    form = AuditFilterForm(request.args)
    if not form.validate():
        flash("Fix the filters before exporting.", "error")
        return render_template("compliance/audit.html", form=form, page=None, chain=None), 400
    return Response(
        stream_with_context(console.export_audit_log(**form.filters())),
        mimetype="text/csv",
        headers={"Content-Disposition": 'attachment; filename="lango-audit-log.csv"'},
    )


@bp.post("/audit/verify")
def audit_verify():
    report = verify_chain(current_key_ring(), configured_checkpoint_dir())
    result = {"ok": report.ok, "entries": report.entries, "checked_at": datetime.now(UTC)}
    if report.ok:
        flash(f"The audit chain is intact: {report.entries:,} entries checked.", "success")
    else:
        # A problem without an entry: the newest entries deleted, or the checkpoint file.
        bad = report.first_bad
        where = f" at seq {bad.seq} ({bad.id})" if bad is not None else ""
        result.update(seq=bad and bad.seq, id=bad and bad.id, problem=report.problem)
        flash(
            f"The audit chain is broken{where}: {report.problem}. "
            f"{report.entries:,} entries checked.",
            "error",
        )
    session["audit_chain"] = result
    return redirect(url_for("compliance.audit"))
