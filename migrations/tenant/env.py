"""Alembic environment for the tenant tree, used only to write revisions.

Applying it is `core.migrations`' job (one transaction per tenant, registry updated in the
same transaction). For `--autogenerate`, this compares the models with a scratch schema
brought to head and dropped afterwards.
"""

from alembic import context
from flask import current_app
from sqlalchemy import text

import billing.models  # noqa: F401  (registers the tenant models on the metadata)
import core.events  # noqa: F401
import payments.models  # noqa: F401
import webhooks.models  # noqa: F401
from core.extensions import TenantBase
from core.migrations import migrate_schema

SCRATCH_SCHEMA = "t_00000000000000000000000000"


def run_migrations_online():
    engine = current_app.extensions["migrate"].db.engine
    with engine.connect() as connection, connection.begin() as transaction:
        connection.exec_driver_sql(f'CREATE SCHEMA "{SCRATCH_SCHEMA}"')
        migrate_schema(connection, SCRATCH_SCHEMA, context.script.dir)
        connection.execute(text(f'SET LOCAL search_path TO "{SCRATCH_SCHEMA}"'))
        context.configure(
            connection=connection,
            target_metadata=TenantBase.metadata,
            version_table_schema=SCRATCH_SCHEMA,
            compare_type=True,
        )
        context.run_migrations()
        transaction.rollback()


if context.is_offline_mode():
    raise SystemExit("Offline (--sql) migrations are not supported; run against a database.")
run_migrations_online()
