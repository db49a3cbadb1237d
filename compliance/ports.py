"""What compliance needs from packages above it, as small interfaces they provide.

Compliance sits below payments and staff and may not import them. Payments provides the
facts of pushes (the fraud-rule dry run reads the last days' pushes; a review case shows its
push), staff the staff users a review case may be assigned to. Each registers its provider
in its `init_app`; without one, compliance sees no pushes and no staff.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from flask import Flask, current_app

_PUSHES = "lango.compliance.pushes"
_STAFF = "lango.compliance.staff"


@dataclass(frozen=True)
class PushFacts:
    """One STK push as compliance sees it."""

    id: str
    livemode: bool
    phone_number: str  # 2547XXXXXXXX, unmasked: compliance masks what staff see
    amount: int  # KES
    status: str  # pending | succeeded | failed | cancelled | expired
    account_reference: str
    created_at: datetime
    resolved_at: datetime | None  # when it reached its final status, if it did
    updated_at: datetime


@dataclass(frozen=True)
class PushReader:
    # (tenant_id, since, until) → the tenant's pushes created in [since, until], oldest
    # first (created_at, then id), streamed. Reads in the tenant's own scope, so it is
    # called with no transaction open.
    recent: Callable[[str, datetime, datetime], Iterator[PushFacts]]
    # (tenant_id, push_id) → that push, or None. Called inside the caller's (platform)
    # transaction: reads without entering the tenant's scope.
    one: Callable[[str, str], PushFacts | None]


class StaffMember(Protocol):
    id: str
    email: str


@dataclass(frozen=True)
class StaffDirectory:
    # staff_id → the staff user, or None.
    find: Callable[[str], StaffMember | None]
    # The staff users holding the compliance role, by email.
    compliance_staff: Callable[[], list[StaffMember]]


def provide_pushes(app: Flask, reader: PushReader) -> None:
    app.extensions[_PUSHES] = reader


def provide_staff_directory(app: Flask, directory: StaffDirectory) -> None:
    app.extensions[_STAFF] = directory


def recent_pushes(tenant_id: str, since: datetime, until: datetime) -> Iterator[PushFacts]:
    reader: PushReader | None = current_app.extensions.get(_PUSHES)
    return iter(()) if reader is None else reader.recent(tenant_id, since, until)


def push_facts(tenant_id: str, push_id: str) -> PushFacts | None:
    reader: PushReader | None = current_app.extensions.get(_PUSHES)
    return None if reader is None else reader.one(tenant_id, push_id)


def find_staff(staff_id: str) -> StaffMember | None:
    directory: StaffDirectory | None = current_app.extensions.get(_STAFF)
    return None if directory is None else directory.find(staff_id)


def compliance_staff() -> list[StaffMember]:
    directory: StaffDirectory | None = current_app.extensions.get(_STAFF)
    return [] if directory is None else directory.compliance_staff()
