"""Audit chains per tenant: no lock shared across tenants; anchors of every chain's head.

Every audited write took one platform-wide lock. Now each tenant's entries form a chain of
their own, and the entries with no tenant (staff, plans, fraud rules) the platform chain:
- `chain` (the tenant id, or 'platform') and `chain_seq` (1, 2, 3 … in the chain) place an
  entry in its chain; `seq` numbers every entry from `audit_log_seq` again (the console's
  order), so appends to different chains share no lock;
- `audit_chain_heads`: each chain's newest seq and hash, the row an append locks;
- `audit_anchors`: the database's copy of the signed anchors (the file in
  AUDIT_CHECKPOINT_DIR keeps the other), append-only like the log.

Existing entries are not re-chained: re-hashing them would need the audit key here and would
bless whatever they say today, and the checkpoints already written anchor them as they are.
They stay what they were, the first stretch of the platform chain (`chain` 'platform',
`chain_seq` = their `seq`, `hash_format` 1: their hash covers no chain); the platform chain
goes on from their head, and each tenant's chain starts from the genesis hash with its first
entry after this revision. `lango audit verify` checks them as before.

Downgrade is refused once an entry was written per chain: the single-chain code could not
verify the per-tenant chains.

Revision ID: 0012_audit_chains
Revises: 0011_upgrade_invoices
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0012_audit_chains"
down_revision = "0011_upgrade_invoices"
branch_labels = None
depends_on = None


def upgrade():
    # Defaults fill the existing rows without an UPDATE; the code always sets both.
    op.add_column(
        "audit_log",
        sa.Column("chain", sa.String(40), nullable=False, server_default="platform"),
        schema="public",
    )
    op.add_column(
        "audit_log",
        sa.Column("hash_format", sa.SmallInteger, nullable=False, server_default="1"),
        schema="public",
    )
    op.add_column("audit_log", sa.Column("chain_seq", sa.BigInteger), schema="public")
    # An UPDATE the append-only trigger would refuse: this revision's one change to old rows.
    op.execute("ALTER TABLE public.audit_log DISABLE TRIGGER audit_log_append_only")
    op.execute("UPDATE public.audit_log SET chain_seq = seq")
    op.execute("ALTER TABLE public.audit_log ENABLE TRIGGER audit_log_append_only")
    op.alter_column("audit_log", "chain_seq", nullable=False, schema="public")
    op.alter_column("audit_log", "chain", server_default=None, schema="public")
    op.alter_column("audit_log", "hash_format", server_default=None, schema="public")
    op.create_unique_constraint(
        "uq_audit_log_chain_seq", "audit_log", ["chain", "chain_seq"], schema="public"
    )
    op.create_check_constraint(
        "ck_audit_log_hash_format",
        "audit_log",
        "hash_format = 2 OR (hash_format = 1 AND chain = 'platform')",
        schema="public",
    )
    # The single chain numbered `seq` itself; the sequence takes over after its highest.
    op.execute(
        "SELECT setval('public.audit_log_seq', COALESCE(max(seq), 0) + 1, false) "
        "FROM public.audit_log"
    )

    op.create_table(
        "audit_chain_heads",
        sa.Column("chain", sa.String(40), primary_key=True),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        schema="public",
    )
    op.execute(
        "INSERT INTO public.audit_chain_heads (chain, seq, hash) "
        "SELECT 'platform', seq, hash FROM public.audit_log ORDER BY seq DESC LIMIT 1"
    )

    op.create_table(
        "audit_anchors",
        sa.Column("chain", sa.String(40), primary_key=True),
        sa.Column("seq", sa.BigInteger, primary_key=True),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("unkeyed_until", sa.BigInteger, nullable=False),
        sa.Column("written_at", sa.String(40), nullable=False),
        sa.Column("key_id", sa.String(16), nullable=False),
        sa.Column("signature", sa.String(64), nullable=False),
        schema="public",
    )
    op.execute(
        """
        CREATE FUNCTION public.audit_anchors_refuse_change() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'public.audit_anchors is append-only: % refused', TG_OP
                USING ERRCODE = 'insufficient_privilege';
        END
        $$
        """
    )
    op.execute(
        "CREATE TRIGGER audit_anchors_append_only BEFORE UPDATE OR DELETE ON "
        "public.audit_anchors FOR EACH ROW EXECUTE FUNCTION public.audit_anchors_refuse_change()"
    )
    op.execute(
        "CREATE TRIGGER audit_anchors_no_truncate BEFORE TRUNCATE ON public.audit_anchors "
        "FOR EACH STATEMENT EXECUTE FUNCTION public.audit_anchors_refuse_change()"
    )


def downgrade():
    chained = op.get_bind().scalar(
        sa.text("SELECT EXISTS (SELECT 1 FROM public.audit_log WHERE hash_format = 2)")
    )
    if chained:
        raise RuntimeError(
            "audit entries were written per chain since 0012_audit_chains; the single-chain "
            "code cannot verify them, so this revision is not undone"
        )
    op.drop_table("audit_anchors", schema="public")
    op.execute("DROP FUNCTION public.audit_anchors_refuse_change()")
    op.drop_table("audit_chain_heads", schema="public")
    op.drop_constraint("ck_audit_log_hash_format", "audit_log", schema="public", type_="check")
    op.drop_constraint("uq_audit_log_chain_seq", "audit_log", schema="public", type_="unique")
    op.drop_column("audit_log", "chain_seq", schema="public")
    op.drop_column("audit_log", "hash_format", schema="public")
    op.drop_column("audit_log", "chain", schema="public")
