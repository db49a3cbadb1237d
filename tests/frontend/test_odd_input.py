"""Odd input never breaks a page: every GET page, with query strings a person or a bot
might type (wrong types, out-of-range dates, forged cursors, huge or odd values), every form
those pages show, posted with such values in every field, and every route with an id in its
path, given an id holding a NUL character, answer 200, a redirect or a 4xx; never a 500."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest

from tests.frontend.conftest import HTML, post_form

ODD_QUERIES = [
    "status=nope&phone=%00&amount_gte=abc&amount_lte=-1",
    "date_from=2026-13-45&date_to=yesterday",
    "date_from=9999-12-31&date_to=0001-01-01",
    "occurred_gte=0001-01-01&occurred_lte=9999-12-31",
    "starting_after=stk_' OR 1=1 --&ending_before=%ff%fe",
    "starting_after=" + "a" * 5000,
    "limit=-5&plan=<script>&q=%25%5F%5C",
    "type=&delivery_status=lost&tenant_id=ten_x&actor_type=robot&action=drop.table",
    "page=1e9&mode=live&livemode=maybe",
]
ODD_VALUES = ["\x00", "-1", "99999999999999999999", "9999-12-31", "<script>", "a" * 3000, " "]
ROLES = [("owner", {"site", "dashboard"}), ("admin", {"admin"}), ("compliance", {"compliance"})]


# Fields a person types into or picks from. Forms with none of them are buttons (revoke,
# retire, reorder, enable): they take no input to be odd, and pressing them would change the
# plan catalog and fraud rules the other tests share.
TYPED = {"text", "email", "number", "url", "password", "search", "tel", "date", None}


class _Forms(HTMLParser):
    """The POST forms of a page that take typed input: [(action, {field names})]."""

    def __init__(self):
        super().__init__()
        self.forms: list[tuple[str, set[str]]] = []
        self._typed: list[bool] = []
        self._open = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "form" and (attrs.get("method") or "").lower() == "post":
            self.forms.append((attrs.get("action") or "", set()))
            self._typed.append(False)
            self._open = True
        elif tag in ("input", "select", "textarea") and self._open and attrs.get("name"):
            self.forms[-1][1].add(attrs["name"])
            if tag != "input" or attrs.get("type") in TYPED:
                self._typed[-1] = True

    def typed_forms(self) -> list[tuple[str, set[str]]]:
        return [form for form, typed in zip(self.forms, self._typed, strict=True) if typed]

    def handle_endtag(self, tag):
        if tag == "form":
            self._open = False


def _pages(app, blueprints: set[str]) -> list[str]:
    return sorted(
        rule.rule
        for rule in app.url_map.iter_rules()
        if rule.endpoint.split(".", 1)[0] in blueprints
        and "GET" in rule.methods
        and not rule.arguments
        and not rule.rule.endswith("/stream")
    )


@pytest.mark.parametrize(("role", "blueprints"), ROLES)
def test_no_page_answers_500_to_odd_query_strings(app, sign_in, role, blueprints):
    client = sign_in(role).client
    failures = []
    for path in _pages(app, blueprints):
        for query in ODD_QUERIES:
            response = client.get(f"{path}?{query}", headers=HTML)
            response.get_data()  # a CSV export streams: read it to its end
            response.close()
            if response.status_code >= 500:
                failures.append(f"{path}?{query[:60]} → {response.status_code}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize(("role", "blueprints"), ROLES)
def test_no_form_answers_500_to_odd_values(app, sign_in, role, blueprints):
    client = sign_in(role).client
    forms = set()
    for path in _pages(app, blueprints):
        parser = _Forms()
        parser.feed(client.get(path, headers=HTML).get_data(as_text=True))
        for action, names in parser.typed_forms():
            action = action or path  # a form without an action posts to its own page
            # Signing out would end the session the other forms need.
            if action.startswith("/") and not action.endswith("/logout"):
                forms.add((action, frozenset(names - {"csrf_token"})))
    assert forms, "no forms found"
    shared_before = _shared_catalogs(app)
    failures = []
    for action, names in sorted(forms):
        for value in ODD_VALUES:
            response = post_form(client, action, dict.fromkeys(names, value))
            response.get_data()
            response.close()
            if response.status_code >= 500:
                failures.append(f"POST {action} {sorted(names)} = {value[:20]!r} → 500")
    assert not failures, "\n".join(failures)
    assert _shared_catalogs(app) == shared_before, "odd input changed a plan or a fraud rule"


def _shared_catalogs(app) -> tuple:
    """The plan catalog and fraud rules: platform rows every test relies on."""
    from sqlalchemy import text

    from core.extensions import db

    with app.app_context():
        plans = db.session.execute(text("SELECT * FROM public.plans ORDER BY code")).all()
        rules = db.session.execute(text("SELECT * FROM public.fraud_rules ORDER BY id")).all()
        db.session.remove()
    return plans, rules


def test_no_route_answers_500_to_a_nul_in_its_path(app, api, sign_in):
    # As an API key holder, a tenant owner and each kind of staff: each reaches other routes.
    clients = [api, *(sign_in(role).client for role in ("owner", "admin", "compliance"))]
    failures = []
    for rule in app.url_map.iter_rules():
        if not rule.arguments or "GET" not in rule.methods or rule.endpoint == "site.static":
            continue
        path = re.sub(r"<[^>]+>", "ten_x%00y", rule.rule)
        for client in clients:
            response = client.get(path, headers=HTML)
            response.get_data()
            response.close()
            if response.status_code >= 500:
                failures.append(f"GET {path} → {response.status_code}")
    assert not failures, "\n".join(sorted(set(failures)))
