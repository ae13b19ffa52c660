"""Authentication scrambles as pure functions.

https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_connection_phase_authentication_methods_native_password_authentication.html
"""

from __future__ import annotations

import hashlib
import hmac

NATIVE_PASSWORD = "mysql_native_password"
CACHING_SHA2_PASSWORD = "caching_sha2_password"
SCRAMBLE_LENGTH = 20


def native_password_scramble(password: bytes, nonce: bytes) -> bytes:
    """What a client sends: SHA1(password) XOR SHA1(nonce + SHA1(SHA1(password)))."""
    if not password:
        return b""
    stage1 = hashlib.sha1(password).digest()
    stage2 = hashlib.sha1(stage1).digest()
    mask = hashlib.sha1(nonce[:SCRAMBLE_LENGTH] + stage2).digest()
    return bytes(a ^ b for a, b in zip(stage1, mask, strict=True))


def native_password_hash(password: bytes) -> bytes:
    """What a server stores: SHA1(SHA1(password))."""
    return hashlib.sha1(hashlib.sha1(password).digest()).digest()


def verify_native_password(stored_hash: bytes, nonce: bytes, response: bytes) -> bool:
    """Check a client's scramble against SHA1(SHA1(password)) without the password."""
    if not response:
        return stored_hash == native_password_hash(b"")
    if len(response) != SCRAMBLE_LENGTH:
        return False
    mask = hashlib.sha1(nonce[:SCRAMBLE_LENGTH] + stored_hash).digest()
    stage1 = bytes(a ^ b for a, b in zip(response, mask, strict=True))
    return hmac.compare_digest(hashlib.sha1(stage1).digest(), stored_hash)


SHA256_PASSWORD = "sha256_password"
# caching_sha2_password's AuthMoreData status bytes and the client's key request.
FAST_AUTH_SUCCESS = 0x03
PERFORM_FULL_AUTHENTICATION = 0x04
REQUEST_PUBLIC_KEY = 0x02


def caching_sha2_scramble(password: bytes, nonce: bytes) -> bytes:
    """What a client sends for caching_sha2_password's fast auth:
    SHA256(password) XOR SHA256(SHA256(SHA256(password)) + nonce)."""
    if not password:
        return b""
    stage1 = hashlib.sha256(password).digest()
    stage2 = hashlib.sha256(stage1).digest()
    mask = hashlib.sha256(stage2 + nonce[:SCRAMBLE_LENGTH]).digest()
    return bytes(a ^ b for a, b in zip(stage1, mask, strict=True))


def caching_sha2_hash(password: bytes) -> bytes:
    """What a caching_sha2_password server caches: SHA256(SHA256(password))."""
    return hashlib.sha256(hashlib.sha256(password).digest()).digest()


def verify_caching_sha2(cached_hash: bytes, nonce: bytes, response: bytes) -> bool:
    """Check a fast-auth scramble against the cached SHA256(SHA256(password))."""
    if len(response) != 32:
        return False
    mask = hashlib.sha256(cached_hash + nonce[:SCRAMBLE_LENGTH]).digest()
    stage1 = bytes(a ^ b for a, b in zip(response, mask, strict=True))
    return hmac.compare_digest(hashlib.sha256(stage1).digest(), cached_hash)


def xor_password(data: bytes, nonce: bytes) -> bytes:
    """The password (NUL-terminated) XOR the scramble repeated, as RSA-encrypted by
    sha256_password and caching_sha2_password full auth; its own inverse."""
    nonce = nonce[:SCRAMBLE_LENGTH]
    return bytes(b ^ nonce[i % len(nonce)] for i, b in enumerate(data))
