"""Password hashing for every account that signs in (tenant members, staff): argon2id.

OWASP's recommended Argon2id floor (19 MiB, 2 passes, 1 lane): ~40 ms here instead of the
library default's ~150 ms, which dominated sign-up on a 2-core machine."""

from __future__ import annotations

import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1)
# Checked when a sign-in names no account, so that answer takes as long as a wrong password.
_DUMMY_HASH = _hasher.hash(secrets.token_hex(16))


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def password_matches(password_hash: str, password: str) -> bool:
    """Whether `password` is the one `password_hash` was made from (False for a malformed
    or foreign hash, never an exception)."""
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def spend_a_password_check(password: str) -> None:
    """The work of one password check, against no account: for sign-ins with an unknown
    email, so their timing does not tell which emails have accounts."""
    password_matches(_DUMMY_HASH, password)
