"""The ids and codes Daraja hands out, in the layouts seen in real payloads (daraja.md §1, §2.2,
§3.1). All random parts come from `secrets`; times are East Africa Time, as Daraja's are."""

from __future__ import annotations

import secrets
import string
import uuid
from datetime import datetime, timedelta, timezone

EAT = timezone(timedelta(hours=3), "EAT")

_ALPHANUMERIC = string.ascii_letters + string.digits
_RECEIPT_ALPHABET = string.digits + string.ascii_uppercase
# Day of month in a receipt: 1-9, then A=10 … V=31.
_RECEIPT_DAYS = "123456789ABCDEFGHIJKLMNOPQRSTUV"


def access_token() -> str:
    """28 alphanumerics, like every OAuth token seen from Daraja."""
    return "".join(secrets.choice(_ALPHANUMERIC) for _ in range(28))


def new_request_id() -> str:
    """The modern hex-group style: `2654-4b64-97ff-b827b542881d3130`, i.e. the last four
    groups of a UUID4 followed by a few decimal digits (used for requestId and
    MerchantRequestID alike)."""
    groups = str(uuid.uuid4()).split("-")[1:]
    digits = str(secrets.randbelow(10**7)).zfill(4 + secrets.randbelow(4))
    return "-".join(groups) + digits


def checkout_request_id(at: datetime, msisdn: str) -> str:
    """`ws_CO_` + DDMMYYYYHHmmssSSS (EAT) + the 9-digit national number, e.g.
    `ws_CO_04072024151523730722724071` (the layout inferred in daraja.md §2.2)."""
    local = at.astimezone(EAT)
    stamp = local.strftime("%d%m%Y%H%M%S") + f"{local.microsecond // 1000:03d}"
    return f"ws_CO_{stamp}{msisdn[-9:]}"


def receipt_number(at: datetime) -> str:
    """10 uppercase alphanumerics: year letter (L=2017 … U=2026), month letter (A=Jan …
    L=Dec), day (1-9, A=10 … V=31), then 7 random characters (daraja.md §3.1, inferred)."""
    local = at.astimezone(EAT)
    year = string.ascii_uppercase[(ord("L") - ord("A") + local.year - 2017) % 26]
    month = string.ascii_uppercase[local.month - 1]
    day = _RECEIPT_DAYS[local.day - 1]
    return year + month + day + "".join(secrets.choice(_RECEIPT_ALPHABET) for _ in range(7))


def transaction_date(at: datetime) -> int:
    """YYYYMMDDHHmmss in EAT, as the number the callback carries."""
    return int(at.astimezone(EAT).strftime("%Y%m%d%H%M%S"))
