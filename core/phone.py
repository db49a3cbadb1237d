"""Kenyan mobile numbers: accepted in the forms people type, stored as 12 digits, masked in
logs. Payments, billing (invoices paid by M-Pesa) and compliance all read them."""

from __future__ import annotations

import re

from marshmallow import ValidationError, fields

# 07XXXXXXXX, 01XXXXXXXX, 7XXXXXXXX, 1XXXXXXXX, +2547…, 2547…, +2541…, 2541…
_PATTERN = re.compile(r"^(?:\+?254|0)?([71]\d{8})$")


def normalize_phone(value: str) -> str | None:
    """`2547XXXXXXXX` / `2541XXXXXXXX`, or None when `value` is not a Kenyan mobile number.
    Spaces and dashes people put in numbers are ignored."""
    match = _PATTERN.fullmatch(re.sub(r"[\s-]", "", value or ""))
    return f"254{match.group(1)}" if match else None


def mask_phone(phone: str) -> str:
    """For logs: 254708374149 → 2547******49."""
    if len(phone) < 6:
        return "*" * len(phone)
    return phone[:4] + "*" * (len(phone) - 6) + phone[-2:]


class PhoneNumber(fields.String):
    """A Kenyan mobile number in any common form, loaded as 12 digits."""

    def _deserialize(self, value, attr, data, **kwargs):
        normalized = normalize_phone(super()._deserialize(value, attr, data, **kwargs))
        if normalized is None:
            raise ValidationError(
                "Must be a Kenyan mobile number, e.g. 0708374149 or 254708374149."
            )
        return normalized
