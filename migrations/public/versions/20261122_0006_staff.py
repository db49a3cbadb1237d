"""Staff users with TOTP 2FA, and the record of admin suspensions.

The tenant keeps `status` / `suspended_reason` ('admin'); the reason text an admin gave, and
who suspended and reinstated, live in `admin_suspensions` (one row per suspension).

Revision ID: 0006_staff
Revises: 0005_fraud_rules
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0006_staff"
down_revision = "0005_fraud_rules"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "staff_users",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("email", sa.String(254), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("password_hash", sa.String(200), nullable=False),
        sa.Column("roles", postgresql.ARRAY(sa.String(20)), nullable=False),
        # Fernet token (core.crypto) of the base32 TOTP secret.
        sa.Column("totp_secret", sa.Text(), nullable=False),
        # The last accepted 30 s step: a code is accepted only for a later step (no replay).
        sa.Column("last_totp_step", sa.BigInteger()),
        sa.Column("failed_attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("locked_until", sa.DateTime(timezone=True)),
        # SHA-256 of each unused recovery code (80 random bits each); used ones are removed.
        sa.Column(
            "recovery_code_hashes",
            postgresql.ARRAY(sa.String(64)),
            nullable=False,
            server_default="{}",
        ),
        # Rotated at each login and cleared at logout: a copied session cookie dies with it.
        sa.Column("session_nonce", sa.String(64)),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column("last_login_at", sa.DateTime(timezone=True)),
        sa.CheckConstraint(
            "roles <@ ARRAY['admin', 'compliance']::varchar[] AND cardinality(roles) > 0",
            name="known_roles",
        ),
        sa.UniqueConstraint("email", name="uq_staff_users_email"),
        schema="public",
    )
    op.create_table(
        "admin_suspensions",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column(
            "tenant_id",
            sa.String(40),
            sa.ForeignKey("public.tenants.id", name="fk_admin_suspensions_tenant_id_tenants"),
            nullable=False,
        ),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column(
            "suspended_by",
            sa.String(40),
            sa.ForeignKey("public.staff_users.id", name="fk_admin_suspensions_suspended_by"),
            nullable=False,
        ),
        sa.Column(
            "suspended_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column(
            "reinstated_by",
            sa.String(40),
            sa.ForeignKey("public.staff_users.id", name="fk_admin_suspensions_reinstated_by"),
        ),
        sa.Column("reinstated_at", sa.DateTime(timezone=True)),
        schema="public",
    )
    op.create_index(
        "ix_admin_suspensions_tenant_id", "admin_suspensions", ["tenant_id"], schema="public"
    )


def downgrade():
    op.drop_table("admin_suspensions", schema="public")
    op.drop_table("staff_users", schema="public")
