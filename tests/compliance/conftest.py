"""Fixtures of the compliance tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from core.extensions import db


@pytest.fixture(autouse=True)
def _empty_audit_chains(request) -> Iterator[None]:
    """Each chain's head row and anchors go with the audit log that tests/conftest.py
    empties after every test (until it empties them itself)."""
    yield
    if "app" not in request.fixturenames:
        return
    app = request.getfixturevalue("app")
    with app.app_context(), db.engine.begin() as connection:
        connection.exec_driver_sql(
            "ALTER TABLE public.audit_anchors DISABLE TRIGGER audit_anchors_no_truncate"
        )
        connection.exec_driver_sql("TRUNCATE public.audit_chain_heads, public.audit_anchors")
        connection.exec_driver_sql(
            "ALTER TABLE public.audit_anchors ENABLE TRIGGER audit_anchors_no_truncate"
        )
