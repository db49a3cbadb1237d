"""Staff users (public schema) and the record of admin suspensions."""

from __future__ import annotations

import enum
from datetime import datetime

from flask_login import UserMixin
from sqlalchemy import BigInteger, DateTime, ForeignKey, String, Text, func
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Mapped, mapped_column

from core.extensions import db

# Flask-Login keeps one id per session; staff ids carry this prefix (members' do not), so
# the loader in tenants.auth can tell the two apart.
SESSION_ID_PREFIX = "staff:"


class StaffRole(enum.StrEnum):
    ADMIN = "admin"
    COMPLIANCE = "compliance"


class StaffUser(UserMixin, db.Model):
    __tablename__ = "staff_users"
    __table_args__ = {"schema": "public"}

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    # Stored lower-cased.
    email: Mapped[str] = mapped_column(String(254), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    password_hash: Mapped[str] = mapped_column(String(200))
    roles: Mapped[list[str]] = mapped_column(ARRAY(String(20)))
    totp_secret: Mapped[str] = mapped_column(Text)  # encrypted (core.crypto)
    last_totp_step: Mapped[int | None] = mapped_column(BigInteger)
    recovery_code_hashes: Mapped[list[str]] = mapped_column(ARRAY(String(64)), default=list)
    session_nonce: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    last_login_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    def get_id(self) -> str:
        # The nonce makes a session die at logout or at the next login, although the
        # session itself lives in a signed cookie the server cannot revoke.
        return f"{SESSION_ID_PREFIX}{self.id}:{self.session_nonce}"

    def has_role(self, *roles: str) -> bool:
        return any(role in self.roles for role in roles)


class AdminSuspension(db.Model):
    """One admin suspension of a tenant: why, by whom, and when it was lifted."""

    __tablename__ = "admin_suspensions"
    __table_args__ = {"schema": "public"}

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("public.tenants.id"), index=True)
    reason: Mapped[str] = mapped_column(Text)
    suspended_by: Mapped[str] = mapped_column(ForeignKey("public.staff_users.id"))
    suspended_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    reinstated_by: Mapped[str | None] = mapped_column(ForeignKey("public.staff_users.id"))
    reinstated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
