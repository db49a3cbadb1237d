"""Form fields the pages share."""

from __future__ import annotations

from datetime import date

from wtforms import DateField
from wtforms.validators import Optional, ValidationError

# Filters take days in this range: every date Lango stores is inside it, and the bounds of a
# day near Python's last date (9999-12-31) cannot be computed.
FIRST_DAY, LAST_DAY = date(2000, 1, 1), date(2999, 12, 31)


def _supported_day(form, field) -> None:
    if field.data is not None and not FIRST_DAY <= field.data <= LAST_DAY:
        raise ValidationError(f"Pick a day between {FIRST_DAY:%Y} and {LAST_DAY:%Y}.")


class EatDayField(DateField):
    """An optional calendar day in East Africa Time (a filter's from/to), years 2000 to 2999."""

    def __init__(self, label: str, **kwargs):
        super().__init__(label, validators=[Optional(), _supported_day], **kwargs)
