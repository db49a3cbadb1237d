"""Dashboard sign-in for tenant members: the viewer role, optional TOTP, team invites.

`members` gains `viewer` (read-only), an optional TOTP secret (encrypted) with the last step
used (a code works once), and a session nonce so that signing out, a password change or
removal ends every copy of a session cookie. `member_invites` holds invite links: only the
SHA-256 of the link's token is stored, and an invite is used once.

Revision ID: 0008_members_dashboard
Revises: 0007_kyc
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0008_members_dashboard"
down_revision = "0007_kyc"
branch_labels = None
depends_on = None


def upgrade():
    # 0001 named it before the naming convention applied its prefix again.
    op.drop_constraint(op.f("ck_members_ck_members_member_role"), "members", schema="public")
    op.create_check_constraint(
        op.f("ck_members_member_role"),
        "members",
        "role IN ('owner', 'developer', 'viewer')",
        schema="public",
    )
    op.add_column("members", sa.Column("totp_secret", sa.Text()), schema="public")
    op.add_column("members", sa.Column("last_totp_step", sa.BigInteger()), schema="public")
    op.add_column("members", sa.Column("session_nonce", sa.String(64)), schema="public")
    op.create_table(
        "member_invites",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column(
            "tenant_id",
            sa.String(40),
            sa.ForeignKey("public.tenants.id", name="fk_member_invites_tenant_id_tenants"),
            nullable=False,
        ),
        sa.Column("email", sa.String(254), nullable=False),
        sa.Column("role", sa.String(20), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("invited_by", sa.String(40), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("accepted_at", sa.DateTime(timezone=True)),
        sa.Column("revoked_at", sa.DateTime(timezone=True)),
        sa.CheckConstraint(
            "role IN ('owner', 'developer', 'viewer')", name=op.f("ck_member_invites_member_role")
        ),
        sa.UniqueConstraint("token_hash", name="uq_member_invites_token_hash"),
        schema="public",
    )
    op.create_index("ix_member_invites_tenant_id", "member_invites", ["tenant_id"], schema="public")


def downgrade():
    op.drop_table("member_invites", schema="public")
    op.drop_column("members", "session_nonce", schema="public")
    op.drop_column("members", "last_totp_step", schema="public")
    op.drop_column("members", "totp_secret", schema="public")
    op.drop_constraint(op.f("ck_members_member_role"), "members", schema="public")
    op.create_check_constraint(
        op.f("ck_members_ck_members_member_role"),
        "members",
        "role IN ('owner', 'developer')",
        schema="public",
    )
