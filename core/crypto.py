"""Encryption at rest for tenant secrets (M-Pesa credentials, webhook secrets).

cryptography's MultiFernet over ENCRYPTION_KEYS (newest first): new data is encrypted with
the first key, any listed key decrypts, and `rotate` re-encrypts old tokens with the first
key so an old key can then be dropped from the list.
"""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from flask import current_app


class EncryptionNotConfigured(RuntimeError):
    """ENCRYPTION_KEYS is empty: secrets cannot be stored."""


def _fernet() -> MultiFernet:
    keys = current_app.extensions["lango.settings"].ENCRYPTION_KEYS
    if not keys:
        raise EncryptionNotConfigured(
            "ENCRYPTION_KEYS is not set; generate a key with `python -c 'from "
            "cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'`"
        )
    return MultiFernet([Fernet(key) for key in keys])


def encrypt(plaintext: str) -> str:
    return _fernet().encrypt(plaintext.encode()).decode()


def decrypt(token: str) -> str:
    """Raises InvalidToken if no configured key decrypts it."""
    return _fernet().decrypt(token.encode()).decode()


def rotate(token: str) -> str:
    return _fernet().rotate(token.encode()).decode()


__all__ = ["EncryptionNotConfigured", "InvalidToken", "decrypt", "encrypt", "rotate"]
