"""Object ids: opaque, random and type-prefixed (`ten_…`, `key_…`), never sequential.

The body is a ULID in lowercase Crockford base32: 48 bits of milliseconds then 80 random
bits, so ids sort by creation time (cursor pagination relies on it) while staying unguessable.
"""

from ulid import ULID


def new_id(prefix: str) -> str:
    return f"{prefix}_{str(ULID()).lower()}"
