"""Upgrade invoices: a move to a dearer plan that Stripe does not collect waits for its
invoice to be paid.

`invoices.kind` tells a period's invoice (`period`, written when a period closes) from the
invoice a plan upgrade issues up front (`upgrade`). One invoice per tenant and period holds
for period invoices only (a partial unique index replaces the constraint), and a tenant has
at most one open upgrade invoice: the plan it is waiting to pay for.

Revision ID: 0011_upgrade_invoices
Revises: 0010_staff_throttle
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0011_upgrade_invoices"
down_revision = "0010_staff_throttle"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column(
        "invoices",
        sa.Column("kind", sa.String(20), nullable=False, server_default="period"),
        schema="public",
    )
    op.create_check_constraint(
        "ck_invoices_invoice_kind", "invoices", "kind IN ('period', 'upgrade')", schema="public"
    )
    op.drop_constraint("uq_invoices_tenant_id", "invoices", schema="public", type_="unique")
    op.create_index(
        "uq_invoices_tenant_id_period",
        "invoices",
        ["tenant_id", "period_start"],
        unique=True,
        schema="public",
        postgresql_where=sa.text("kind = 'period'"),
    )
    op.create_index(
        "uq_invoices_tenant_id_open_upgrade",
        "invoices",
        ["tenant_id"],
        unique=True,
        schema="public",
        postgresql_where=sa.text("kind = 'upgrade' AND status = 'open'"),
    )


def downgrade():
    op.execute("DELETE FROM public.invoices WHERE kind = 'upgrade'")
    op.drop_index("uq_invoices_tenant_id_open_upgrade", "invoices", schema="public")
    op.drop_index("uq_invoices_tenant_id_period", "invoices", schema="public")
    op.create_unique_constraint(
        "uq_invoices_tenant_id", "invoices", ["tenant_id", "period_start"], schema="public"
    )
    op.drop_constraint("ck_invoices_invoice_kind", "invoices", schema="public", type_="check")
    op.drop_column("invoices", "kind", schema="public")
