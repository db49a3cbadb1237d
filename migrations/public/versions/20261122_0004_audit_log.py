"""Audit log (append-only, hash-chained).

`seq` orders the chain (taken under the append lock, so it is monotonic in chain order);
`id` is the public, ULID-based id used for cursor pagination. A trigger refuses UPDATE,
DELETE and TRUNCATE for every role, so rows change only if a superuser disables it — which
`lango audit verify` then detects through the hash chain.

Revision ID: 0004_audit_log
Revises: 0003_billing
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004_audit_log"
down_revision = "0003_billing"
branch_labels = None
depends_on = None


def upgrade():
    op.execute("CREATE SEQUENCE public.audit_log_seq AS bigint")
    op.create_table(
        "audit_log",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column(
            "seq",
            sa.BigInteger,
            nullable=False,
            unique=True,
            server_default=sa.text("nextval('public.audit_log_seq')"),
        ),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor_type", sa.String(20), nullable=False),
        sa.Column("actor_id", sa.String(64)),
        sa.Column("actor_label", sa.String(100)),
        sa.Column("action", sa.String(60), nullable=False),
        sa.Column("target_type", sa.String(40), nullable=False),
        sa.Column("target_id", sa.String(64)),
        # No foreign key: the audit trail outlives anything it mentions.
        sa.Column("tenant_id", sa.String(40)),
        sa.Column("source_ip", sa.String(64)),
        sa.Column("request_id", sa.String(40)),
        sa.Column("diff", postgresql.JSONB),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.CheckConstraint(
            "actor_type IN ('staff', 'member', 'api_key', 'system')", name="ck_audit_actor_type"
        ),
        schema="public",
    )
    op.execute("ALTER SEQUENCE public.audit_log_seq OWNED BY public.audit_log.seq")
    op.create_index("ix_audit_log_tenant_id", "audit_log", ["tenant_id", "id"], schema="public")
    op.create_index("ix_audit_log_action", "audit_log", ["action", "id"], schema="public")
    op.create_index("ix_audit_log_occurred_at", "audit_log", ["occurred_at"], schema="public")
    op.execute(
        """
        CREATE FUNCTION public.audit_log_refuse_change() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'public.audit_log is append-only: % refused', TG_OP
                USING ERRCODE = 'insufficient_privilege';
        END
        $$
        """
    )
    op.execute(
        "CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON public.audit_log "
        "FOR EACH ROW EXECUTE FUNCTION public.audit_log_refuse_change()"
    )
    op.execute(
        "CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON public.audit_log "
        "FOR EACH STATEMENT EXECUTE FUNCTION public.audit_log_refuse_change()"
    )


def downgrade():
    op.drop_table("audit_log", schema="public")
    op.execute("DROP FUNCTION public.audit_log_refuse_change()")
