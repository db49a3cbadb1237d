"""Column types shared by the domains' models."""

from __future__ import annotations

import enum

from sqlalchemy import Enum


def text_enum(enum_class: type[enum.Enum], name: str) -> Enum:
    """An enum stored as text with a CHECK constraint (not a PostgreSQL enum type): adding a
    value is a cheap migration, and tenant schemas hold no types of their own."""
    return Enum(
        enum_class,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=20,
        values_callable=lambda members: [member.value for member in members],
    )
