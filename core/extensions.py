"""The shared extension objects, created unbound and attached in `create_app`."""

from flask_limiter import Limiter
from flask_login import LoginManager
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import MetaData
from sqlalchemy.orm import DeclarativeBase

from core.api import LangoApi
from core.ratelimit import rate_limit_key

# Deterministic constraint names make Alembic migrations reviewable and reversible.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class PlatformBase(DeclarativeBase):
    """Platform tables live in the `public` schema; each model says so in `__table_args__`."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class TenantBase(DeclarativeBase):
    """Tenant tables are declared without a schema: they resolve through the search_path that
    `core.tenancy` sets at transaction start, so they exist only inside a tenant scope."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


db = SQLAlchemy(model_class=PlatformBase)
migrate = Migrate()
login_manager = LoginManager()
api = LangoApi()
limiter = Limiter(key_func=rate_limit_key)
