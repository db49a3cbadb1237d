"""Compliance console: fraud rules — list, create, edit, enable/disable and reorder, with a
dry run against recent pushes before saving."""

from __future__ import annotations

from flask import flash, g, redirect, render_template, request, url_for
from flask_wtf import FlaskForm
from wtforms import BooleanField, HiddenField, IntegerField, SelectField, StringField, TextAreaField
from wtforms.validators import AnyOf, DataRequired, InputRequired, Length, NumberRange, Optional

from compliance import console, dry_run
from compliance.fraud import Outcome
from core.errors import LangoError, NotFound
from core.extensions import db
from frontend.compliance import bp, enum_choices, show_error


class RuleForm(FlaskForm):
    expression = TextAreaField(
        "Expression",
        [DataRequired(), Length(max=2000)],
        render_kw={"rows": 3, "spellcheck": "false", "autocomplete": "off"},
    )
    outcome = SelectField("Outcome", choices=enum_choices(Outcome))
    description = StringField("Description", [Optional(), Length(max=255)])
    position = IntegerField("Position", [InputRequired(), NumberRange(min=0)])


class RuleEditForm(RuleForm):
    enabled = BooleanField("Enabled")


class RuleEnabledForm(FlaskForm):
    enabled = HiddenField(validators=[AnyOf(["0", "1"])])


class RuleMoveForm(FlaskForm):
    direction = HiddenField(validators=[AnyOf(["up", "down"])])


@bp.get("/fraud/rules")
def fraud_rules():
    return render_template("compliance/fraud_rules.html", rules=console.list_rules())


def _rule_form_page(form: RuleForm, rule=None, status: int = 200, result=None):
    page = render_template("compliance/fraud_rule_form.html", form=form, rule=rule, result=result)
    return page, status


def _dry_run(form: RuleForm, rule=None):
    """The form again with what its expression would have matched; nothing is saved."""
    if not form.expression.validate(form):
        return _rule_form_page(form, rule, 400)
    try:
        result = dry_run.dry_run_rule(form.expression.data)
    except LangoError as error:
        show_error(form, error)
        return _rule_form_page(form, rule, error.status)
    flash(
        f"Dry run: {result.matched:,} of {result.pushes:,} pushes in the last 7 days would "
        "have matched. Nothing was saved.",
        "info",
    )
    return _rule_form_page(form, rule, result=result)


@bp.route("/fraud/rules/new", methods=["GET", "POST"])
def fraud_rules_new():
    form = RuleForm()
    if request.method == "GET":
        form.position.data = console.next_rule_position()
        form.outcome.data = Outcome.REVIEW.value
        return _rule_form_page(form)
    if "dry_run" in request.form:
        return _dry_run(form)
    if not form.validate():
        return _rule_form_page(form, status=400)
    try:
        with db.session.begin_nested():
            rule = console.create_rule(
                g.staff,
                expression=form.expression.data.strip(),
                outcome=form.outcome.data,
                description=(form.description.data or "").strip(),
                position=form.position.data,
            )
    except LangoError as error:
        show_error(form, error)
        return _rule_form_page(form, status=error.status)
    flash(f"Rule {rule.id} created; it applies to the next push screened.", "success")
    return redirect(url_for("compliance.fraud_rules"))


@bp.route("/fraud/rules/<rule_id>", methods=["GET", "POST"])
def fraud_rules_edit(rule_id: str):
    rule = console.get_rule(rule_id)
    form = RuleEditForm(obj=rule)
    if request.method == "GET":
        return _rule_form_page(form, rule)
    if "dry_run" in request.form:
        return _dry_run(form, rule)
    if not form.validate():
        return _rule_form_page(form, rule, 400)
    wanted = {
        "expression": form.expression.data.strip(),
        "outcome": form.outcome.data,
        "description": (form.description.data or "").strip(),
        "position": form.position.data,
        "enabled": form.enabled.data,
    }
    changes = {name: value for name, value in wanted.items() if getattr(rule, name) != value}
    if not changes:
        flash("Nothing changed.", "info")
        return redirect(url_for("compliance.fraud_rules"))
    try:
        with db.session.begin_nested():
            console.update_rule(g.staff, rule_id, changes)
    except NotFound:
        raise
    except LangoError as error:
        show_error(form, error)
        return _rule_form_page(form, rule, error.status)
    flash(f"Rule {rule_id} saved; it applies to the next push screened.", "success")
    return redirect(url_for("compliance.fraud_rules"))


@bp.post("/fraud/rules/<rule_id>/enabled")
def fraud_rules_toggle(rule_id: str):
    form = RuleEnabledForm()
    if not form.validate():
        flash("Say whether the rule should be enabled.", "error")
        return redirect(url_for("compliance.fraud_rules"))
    enabled = form.enabled.data == "1"
    console.update_rule(g.staff, rule_id, {"enabled": enabled})
    flash(f"Rule {rule_id} {'enabled' if enabled else 'disabled'}.", "success")
    return redirect(url_for("compliance.fraud_rules"))


@bp.post("/fraud/rules/<rule_id>/move")
def fraud_rules_move(rule_id: str):
    form = RuleMoveForm()
    if not form.validate():
        flash("Move a rule up or down.", "error")
        return redirect(url_for("compliance.fraud_rules"))
    console.move_rule(g.staff, rule_id, form.direction.data)
    flash(f"Rule {rule_id} moved {form.direction.data}.", "success")
    return redirect(url_for("compliance.fraud_rules"))
