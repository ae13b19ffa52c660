"""mysql.password: mysql_native_password helpers (reference section 8.2)."""

from __future__ import annotations

import hashlib
import logging

from mysqlproxy.protocol.auth import SCRAMBLE_LENGTH

log = logging.getLogger(__name__)


def _sha1(data: bytes) -> bytes:
    return hashlib.sha1(data).digest()


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def _challenge(challenge: bytes) -> bytes | None:
    """The 20 challenge bytes; 21 are allowed (trailing NUL ignored)."""
    if len(challenge) not in (SCRAMBLE_LENGTH, SCRAMBLE_LENGTH + 1):
        return None
    return challenge[:SCRAMBLE_LENGTH]


def hash(password: bytes) -> bytes:
    """SHA1(password): what mysql-proxy calls the hashed password."""
    return _sha1(password)


def scramble(challenge: bytes, hashed: bytes) -> bytes:
    """Client response: hashed XOR SHA1(challenge .. SHA1(hashed)); b"" on bad sizes."""
    ch = _challenge(challenge)
    if ch is None or len(hashed) != SCRAMBLE_LENGTH:
        log.critical("password.scramble(): challenge must be 20 bytes and hashed password 20 bytes")
        return b""
    return _xor(hashed, _sha1(ch + _sha1(hashed)))


def unscramble(challenge: bytes, response: bytes, dbl_hashed: bytes) -> bytes:
    """Recover SHA1(password) = response XOR SHA1(challenge .. dbl_hashed); b"" on bad sizes."""
    ch = _challenge(challenge)
    if ch is None or len(response) != SCRAMBLE_LENGTH or len(dbl_hashed) != SCRAMBLE_LENGTH:
        log.critical("password.unscramble(): challenge, response and hash must be 20 bytes")
        return b""
    return _xor(response, _sha1(ch + dbl_hashed))


def check(challenge: bytes, response: bytes, dbl_hashed: bytes) -> bool:
    """True if response is a valid scramble for the password whose SHA1(SHA1()) is given."""
    hashed = unscramble(challenge, response, dbl_hashed)
    return bool(hashed) and _sha1(hashed) == dbl_hashed
