"""Odd input never breaks a page: every GET page, with query strings a person or a bot
might type (wrong types, out-of-range dates, forged cursors, huge or odd values), answers
200, a redirect or a 4xx page; never a 500."""

from __future__ import annotations

import pytest

from tests.frontend.conftest import HTML

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


def _pages(app, blueprints: set[str]) -> list[str]:
    return sorted(
        rule.rule
        for rule in app.url_map.iter_rules()
        if rule.endpoint.split(".", 1)[0] in blueprints
        and "GET" in rule.methods
        and not rule.arguments
        and not rule.rule.endswith("/stream")
    )


@pytest.mark.parametrize(
    ("role", "blueprints"),
    [("owner", {"site", "dashboard"}), ("admin", {"admin"}), ("compliance", {"compliance"})],
)
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
