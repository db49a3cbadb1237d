"""Alembic environment for the public schema (platform tables)."""

from alembic import context
from flask import current_app

import tenants.models  # noqa: F401  (registers the platform models on the metadata)

metadata = current_app.extensions["migrate"].db.metadata


def include_name(name, type_, parent_names):
    # Only the public schema belongs to this tree; tenant schemas have their own.
    if type_ == "schema":
        return name in (None, "public")
    return True


def run_migrations_online():
    engine = current_app.extensions["migrate"].db.engine
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=metadata,
            include_schemas=True,
            include_name=include_name,
            version_table_schema="public",
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("Offline (--sql) migrations are not supported; run against a database.")
run_migrations_online()
