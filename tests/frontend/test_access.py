"""Every page is in an access table: each test module of tests/frontend declares `ACCESS`
[(path, {role: status})] for its pages and runs it; this test makes sure no page without
URL parameters was left out (pages with ids are covered by their modules' own tests)."""

from __future__ import annotations

import importlib
import pkgutil

import tests.frontend

PAGE_BLUEPRINTS = {"site", "staff_pages", "dashboard", "admin", "compliance"}
# Pages whose answer is not a page for anyone: form endpoints reached by POST only, the
# static assets, and the streaming/CSV downloads listed in their modules' tests.
NOT_PAGES = {"site.static"}


def declared_paths() -> set[str]:
    paths = set()
    for module_info in pkgutil.iter_modules(tests.frontend.__path__):
        if not module_info.name.startswith("test_"):
            continue
        module = importlib.import_module(f"tests.frontend.{module_info.name}")
        for path, _expected in getattr(module, "ACCESS", []):
            paths.add(path.split("?", 1)[0])
    return paths


def test_every_page_without_parameters_has_an_access_table(app):
    declared = declared_paths()
    missing = []
    for rule in app.url_map.iter_rules():
        blueprint = rule.endpoint.split(".", 1)[0]
        if blueprint not in PAGE_BLUEPRINTS or rule.endpoint in NOT_PAGES:
            continue
        if "GET" not in rule.methods or rule.arguments:
            continue
        if rule.rule not in declared:
            missing.append(f"{rule.rule} ({rule.endpoint})")
    assert not missing, "pages without an ACCESS table row:\n" + "\n".join(sorted(missing))
