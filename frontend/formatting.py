"""How numbers and times read on pages: amounts in KES, times in East Africa Time."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from flask import Flask

EAT = ZoneInfo("Africa/Nairobi")


def kes(amount: int | None) -> str:
    """Whole shillings with thousands separators: `KES 12,500`."""
    if amount is None:
        return "—"
    return f"KES {amount:,}"


def eat(moment: datetime | None, fmt: str = "%d %b %Y, %H:%M") -> str:
    """A stored (UTC) time as East Africa Time: `22 Nov 2026, 14:05 EAT`."""
    if moment is None:
        return "—"
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(EAT).strftime(fmt) + " EAT"


def eat_date(moment: datetime | None) -> str:
    return eat(moment, "%d %b %Y").removesuffix(" EAT") if moment else "—"


def number(value: int | None) -> str:
    return "—" if value is None else f"{value:,}"


def percent(part: int, whole: int) -> str:
    """`part` of `whole` as a whole percentage; a dash when there is nothing to divide."""
    return f"{round(100 * part / whole)}%" if whole else "—"


def mask_phone(phone: str | None) -> str:
    """2547•••••149: enough to recognise a customer, not enough to call them."""
    if not phone:
        return "—"
    return phone[:4] + "•" * max(len(phone) - 7, 0) + phone[-3:]


def duration(seconds: int) -> str:
    """A span in the largest unit that reads naturally: `5 days`, `about 28 hours`, `30 minutes`
    ("about" when rounding changed it)."""
    if seconds >= 2 * 86400:
        unit, size = "day", 86400
    elif seconds >= 2 * 3600:
        unit, size = "hour", 3600
    elif seconds >= 2 * 60:
        unit, size = "minute", 60
    else:
        unit, size = "second", 1
    count = round(seconds / size)
    text = f"{count} {unit}{'' if count == 1 else 's'}"
    return text if count * size == seconds else f"about {text}"


def register(app: Flask) -> None:
    for name, function in {
        "kes": kes,
        "eat": eat,
        "eat_date": eat_date,
        "number": number,
        "mask_phone": mask_phone,
    }.items():
        app.add_template_filter(function, name)
    app.add_template_global(percent, "percent")
