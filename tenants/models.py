"""Platform (public-schema) models: tenants, their members and API keys."""

from __future__ import annotations

import enum
from datetime import datetime

from flask_login import UserMixin
from sqlalchemy import BigInteger, Boolean, DateTime, ForeignKey, String, Text, func
from sqlalchemy.orm import Mapped, mapped_column

from core.extensions import db
from core.sqltypes import text_enum


class TenantStatus(enum.StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"


class MemberRole(enum.StrEnum):
    """What a member may change in the dashboard: owners everything; developers keys,
    webhooks and test pushes; viewers nothing (frontend.auth enforces it per page)."""

    OWNER = "owner"
    DEVELOPER = "developer"
    VIEWER = "viewer"


class Tenant(db.Model):
    __tablename__ = "tenants"
    __table_args__ = {"schema": "public"}

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    business_name: Mapped[str] = mapped_column(String(100))
    status: Mapped[TenantStatus] = mapped_column(
        text_enum(TenantStatus, "tenant_status"), default=TenantStatus.ACTIVE
    )
    plan: Mapped[str] = mapped_column(String(40))
    # Why a suspended tenant is suspended: "billing" (dunning), "compliance", "admin".
    suspended_reason: Mapped[str | None] = mapped_column(String(40))
    # Live mode stays off until compliance approves the tenant.
    live_enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    # The registry: where the tenant's data lives and at which tenant-tree revision.
    schema_name: Mapped[str] = mapped_column(String(63), unique=True)
    schema_revision: Mapped[str | None] = mapped_column(String(40))
    schema_migrated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Which database/shard holds the schema; one today, recorded for scale-out.
    shard: Mapped[str] = mapped_column(String(40), default="default")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )

    @property
    def is_active(self) -> bool:
        return self.status is TenantStatus.ACTIVE


class Member(UserMixin, db.Model):
    """A person in a tenant's team; signs in to the dashboard (Flask-Login user)."""

    __tablename__ = "members"
    __table_args__ = {"schema": "public"}

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("public.tenants.id"), index=True)
    # Stored lower-cased; one person signs in to one tenant with one email.
    email: Mapped[str] = mapped_column(String(254), unique=True)
    password_hash: Mapped[str] = mapped_column(String(200))
    role: Mapped[MemberRole] = mapped_column(text_enum(MemberRole, "member_role"))
    # Optional second factor: the TOTP secret, encrypted (core.crypto); each step used once.
    totp_secret: Mapped[str | None] = mapped_column(Text)
    last_totp_step: Mapped[int | None] = mapped_column(BigInteger)
    # Part of the session id: rotating it (sign-out, password change) ends every copy of a
    # session cookie, which the server could not otherwise revoke.
    session_nonce: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    def get_id(self) -> str:
        return f"{self.id}:{self.session_nonce}"


class MemberInvite(db.Model):
    """An invite link to join a tenant's team with a role: the token's SHA-256 only, used once."""

    __tablename__ = "member_invites"
    __table_args__ = {"schema": "public"}

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("public.tenants.id"), index=True)
    email: Mapped[str] = mapped_column(String(254))
    role: Mapped[MemberRole] = mapped_column(text_enum(MemberRole, "member_role"))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    invited_by: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    accepted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ApiKey(db.Model):
    __tablename__ = "api_keys"
    __table_args__ = {"schema": "public"}

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("public.tenants.id"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    livemode: Mapped[bool] = mapped_column(Boolean)
    # SHA-256 of the secret. Secrets carry 190 random bits, so a fast hash is safe here and
    # keeps authentication to one indexed lookup.
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(20))
    last4: Mapped[str] = mapped_column(String(4))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Set when the key is rolled with a grace period: valid until then, refused after.
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    rolled_into_id: Mapped[str | None] = mapped_column(String(40))
