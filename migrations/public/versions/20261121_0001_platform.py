"""Platform tables: tenants (with the schema registry), members, API keys.

Revision ID: 0001_platform
Revises:
Create Date: 2026-11-21
"""

import sqlalchemy as sa
from alembic import op

revision = "0001_platform"
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "tenants",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("business_name", sa.String(100), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("plan", sa.String(40), nullable=False),
        sa.Column("live_enabled", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("schema_name", sa.String(63), nullable=False),
        sa.Column("schema_revision", sa.String(40)),
        sa.Column("schema_migrated_at", sa.DateTime(timezone=True)),
        sa.Column("shard", sa.String(40), nullable=False, server_default="default"),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.CheckConstraint("status IN ('active', 'suspended')", name="ck_tenants_tenant_status"),
        sa.CheckConstraint("schema_name ~ '^t_[0-9a-z]{26}$'", name="ck_tenants_schema_name"),
        sa.UniqueConstraint("schema_name", name="uq_tenants_schema_name"),
        schema="public",
    )
    op.create_table(
        "members",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column(
            "tenant_id",
            sa.String(40),
            sa.ForeignKey("public.tenants.id", name="fk_members_tenant_id_tenants"),
            nullable=False,
        ),
        sa.Column("email", sa.String(254), nullable=False),
        sa.Column("password_hash", sa.String(200), nullable=False),
        sa.Column("role", sa.String(20), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.CheckConstraint("role IN ('owner', 'developer')", name="ck_members_member_role"),
        sa.UniqueConstraint("email", name="uq_members_email"),
        schema="public",
    )
    op.create_index("ix_public_members_tenant_id", "members", ["tenant_id"], schema="public")
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column(
            "tenant_id",
            sa.String(40),
            sa.ForeignKey("public.tenants.id", name="fk_api_keys_tenant_id_tenants"),
            nullable=False,
        ),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("livemode", sa.Boolean(), nullable=False),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("prefix", sa.String(20), nullable=False),
        sa.Column("last4", sa.String(4), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column("last_used_at", sa.DateTime(timezone=True)),
        sa.Column("expires_at", sa.DateTime(timezone=True)),
        sa.Column("revoked_at", sa.DateTime(timezone=True)),
        sa.Column("rolled_into_id", sa.String(40)),
        sa.UniqueConstraint("secret_hash", name="uq_api_keys_secret_hash"),
        schema="public",
    )
    op.create_index("ix_public_api_keys_tenant_id", "api_keys", ["tenant_id"], schema="public")


def downgrade():
    op.drop_table("api_keys", schema="public")
    op.drop_table("members", schema="public")
    op.drop_table("tenants", schema="public")
