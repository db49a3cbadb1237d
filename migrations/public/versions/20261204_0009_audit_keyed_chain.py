"""Audit log entries keyed with HMAC-SHA256: the key's id per entry.

`key_id` names the audit key (AUDIT_KEYS, or the one derived from SECRET_KEY) whose
HMAC-SHA256 is the entry's `hash`. Entries written before this revision keep NULL: their
hash is the old unkeyed SHA-256, which `lango audit verify` accepts only for the oldest
entries sealed by the first checkpoint (compliance/audit.py says why).

Revision ID: 0009_audit_keyed_chain
Revises: 0008_members_dashboard
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0009_audit_keyed_chain"
down_revision = "0008_members_dashboard"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("audit_log", sa.Column("key_id", sa.String(16)), schema="public")


def downgrade():
    op.drop_column("audit_log", "key_id", schema="public")
