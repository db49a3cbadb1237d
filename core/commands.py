"""Operator commands as units of work: the CLI edge.

Packages build their commands with `group(...)` / `command(...)` and add them to `app.cli` in
`init_app`; `lango` (core.cli) lists them. Each command runs in an app context as one unit
of work (core.unit_of_work): committed when it returns, rolled back when it raises, as a
request or a job is. A command that visits tenants uses `tenant_unit_of_work` per tenant.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps

import click
from flask.cli import AppGroup, with_appcontext

from core.unit_of_work import unit_of_work


def _as_unit(func: Callable) -> Callable:
    @wraps(func)
    def run(*args, **kwargs):
        with unit_of_work():
            return func(*args, **kwargs)

    return run


class UnitGroup(AppGroup):
    """A click group whose commands (and sub-groups') each run as one unit of work."""

    def command(self, *args, **kwargs):
        in_app = kwargs.pop("with_appcontext", True)

        def decorator(func):
            if in_app:
                func = with_appcontext(_as_unit(func))
            return click.Group.command(self, *args, **kwargs)(func)

        return decorator

    def group(self, *args, **kwargs):
        kwargs.setdefault("cls", UnitGroup)
        return super().group(*args, **kwargs)


def group(name: str, **kwargs) -> UnitGroup:
    """A command group, e.g. `lango staff …`."""
    return UnitGroup(name, **kwargs)


def command(*args, **kwargs):
    """A single top-level command, e.g. `lango queues`; `with_appcontext=False` for one that
    needs no app (it then runs outside any unit of work)."""
    in_app = kwargs.pop("with_appcontext", True)

    def decorator(func):
        if in_app:
            func = with_appcontext(_as_unit(func))
        return click.command(*args, **kwargs)(func)

    return decorator
