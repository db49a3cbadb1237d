"""Live Daraja credentials per tenant, encrypted at rest.

Revision ID: 0002_mpesa_credentials
Revises: 0001_platform
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0002_mpesa_credentials"
down_revision = "0001_platform"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "mpesa_credentials",
        sa.Column(
            "tenant_id",
            sa.String(40),
            sa.ForeignKey("public.tenants.id", name="fk_mpesa_credentials_tenant_id_tenants"),
            primary_key=True,
        ),
        sa.Column("shortcode", sa.String(7), nullable=False),
        sa.Column("kind", sa.String(10), nullable=False),
        sa.Column("till_number", sa.String(7)),
        sa.Column("consumer_key_encrypted", sa.Text(), nullable=False),
        sa.Column("consumer_secret_encrypted", sa.Text(), nullable=False),
        sa.Column("passkey_encrypted", sa.Text(), nullable=False),
        sa.Column("consumer_key_last4", sa.String(4), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("kind IN ('paybill', 'till')", name="ck_mpesa_credentials_kind"),
        schema="public",
    )


def downgrade():
    op.drop_table("mpesa_credentials", schema="public")
