"""KYC records and their documents.

A tenant's business details for live mode (`kyc_submissions`, one row per submission, the
latest counts) and the documents it uploaded with them (`kyc_documents`). Document bytes live
outside the database (KYC_STORAGE_DIR); each row keeps the file's size and SHA-256.

Revision ID: 0007_kyc
Revises: 0006_staff
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0007_kyc"
down_revision = "0006_staff"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "kyc_submissions",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column(
            "tenant_id",
            sa.String(40),
            sa.ForeignKey("public.tenants.id", name="fk_kyc_submissions_tenant_id_tenants"),
            nullable=False,
        ),
        sa.Column("legal_name", sa.String(200), nullable=False),
        sa.Column("registration_number", sa.String(60), nullable=False),
        sa.Column("kra_pin", sa.String(11), nullable=False),
        sa.Column("director_name", sa.String(200), nullable=False),
        sa.Column("director_id_number", sa.String(40), nullable=False),
        sa.Column("contact_email", sa.String(254), nullable=False),
        sa.Column("contact_phone", sa.String(20), nullable=False),
        sa.Column("status", sa.String(20), nullable=False, server_default="submitted"),
        sa.Column("rejection_reason", sa.Text()),
        sa.Column(
            "reviewed_by",
            sa.String(40),
            sa.ForeignKey("public.staff_users.id", name="fk_kyc_submissions_reviewed_by"),
        ),
        sa.Column("reviewed_at", sa.DateTime(timezone=True)),
        sa.Column(
            "submitted_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.CheckConstraint(
            "status IN ('submitted', 'approved', 'rejected')", name="ck_kyc_submissions_status"
        ),
        sa.CheckConstraint("kra_pin ~ '^[A-Z][0-9]{9}[A-Z]$'", name="ck_kyc_submissions_kra_pin"),
        # A rejection always carries the reason the tenant is shown.
        sa.CheckConstraint(
            "status <> 'rejected' OR rejection_reason IS NOT NULL",
            name="ck_kyc_submissions_rejection_reason",
        ),
        schema="public",
    )
    op.create_index(
        "ix_kyc_submissions_tenant_id", "kyc_submissions", ["tenant_id"], schema="public"
    )
    op.create_index("ix_kyc_submissions_status", "kyc_submissions", ["status"], schema="public")
    op.create_table(
        "kyc_documents",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column(
            "submission_id",
            sa.String(40),
            sa.ForeignKey(
                "public.kyc_submissions.id",
                name="fk_kyc_documents_submission_id",
                ondelete="CASCADE",
            ),
            nullable=False,
        ),
        sa.Column("filename", sa.String(255), nullable=False),
        sa.Column("content_type", sa.String(100), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        # Relative to KYC_STORAGE_DIR.
        sa.Column("storage_path", sa.String(500), nullable=False),
        sa.Column(
            "uploaded_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        schema="public",
    )
    op.create_index(
        "ix_kyc_documents_submission_id", "kyc_documents", ["submission_id"], schema="public"
    )


def downgrade():
    op.drop_table("kyc_documents", schema="public")
    op.drop_table("kyc_submissions", schema="public")
