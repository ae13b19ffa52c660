"""A fake MySQL 8.0 server that really checks passwords, for authentication tests.

No MySQL 8 server can be installed here, so this plays one: it is built on
`fakeserver` and the project's own protocol module, and does the server side of
MySQL 8's authentication plugins for real (real clients must compute the right
answers, or they are refused):

- caching_sha2_password (the greeting's default plugin, as in MySQL 8): fast auth
  against a cache of SHA256(SHA256(password)) -> AuthMoreData 0x03, then OK; a cold
  cache -> AuthMoreData 0x04 (perform full authentication), then either a cleartext
  password (accepted over TLS only, as MySQL does) or the client's public key request
  (0x02) -> AuthMoreData with the PEM public key, then the RSA-OAEP encrypted
  (password XOR scramble) -> checked -> OK, and the cache is warm.
- sha256_password: over TLS the password in clear; otherwise the client asks for the
  key (0x01) -> PEM key -> RSA exchange.
- TLS, when given an SSL context (`tls=`): CLIENT_SSL is offered, and an SSLRequest is
  followed by a TLS handshake, then the handshake response at sequence id 2.
- mysql_native_password: the SHA1 scramble.
- Auth switch: a user whose plugin is not the one the client answered with gets an
  AuthSwitchRequest (0xFE) with a fresh scramble.
- COM_CHANGE_USER, with the same plugins and switches.
- A wrong password (or unknown user) -> ERR 1045, ER_ACCESS_DENIED_ERROR.
- Query attributes (CLIENT_QUERY_ATTRIBUTES, MySQL 8.0.23+) are offered; commands are
  answered by the script as in `fakeserver`, whose ReceivedCommand reads the attributes
  and the text of each COM_QUERY (`.query_attributes`, `.query`).

    with running_mysql8({"alice": Account(CACHING_SHA2_PASSWORD, "secret")}) as fake:
        pymysql.connect(port=fake.address.port, user="alice", password="secret")

The RSA key pair is made once per process (`rsa_keys()`), as key generation is slow.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import os
import ssl
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from mysqlproxy.protocol import auth, messages, wire
from mysqlproxy.protocol.constants import Capability, Command
from mysqlproxy.protocol.errors import ProtocolError
from mysqlproxy.protocol.messages import Greeting
from mysqlproxy.protocol.packets import encode_packet
from mysqlproxy.proxy.backends import Address
from mysqlproxy.proxy.tls import feed_after_start_tls
from mysqlproxy.testing.fakeserver import (
    Close,
    FakeConnection,
    FakeServer,
    ReceivedCommand,
    Script,
    _ConnectionClosed,
    _Conversation,
    auth_switch_request,
    err,
    make_greeting,
    ok,
)
from mysqlproxy.testing.loopthread import running_on_loop_thread

ER_ACCESS_DENIED = 1045
_OAEP = padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA1()), algorithm=hashes.SHA1(), label=None)


@dataclass(frozen=True, slots=True)
class Account:
    """A user's authentication plugin and password."""

    plugin: str
    password: str


@dataclass(frozen=True, slots=True)
class RsaKeys:
    private_key: rsa.RSAPrivateKey
    public_pem: bytes


@functools.cache
def rsa_keys() -> RsaKeys:
    """The server's RSA key pair, made once per process."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return RsaKeys(key, pem)


@dataclass(frozen=True, slots=True)
class Login:
    """How one authentication (handshake or COM_CHANGE_USER) went, server side."""

    user: str
    plugin: str  # the plugin that decided
    path: str  # "native", "fast", "full-rsa", "full-tls", "rsa", "cleartext-refused", ...
    switched: bool  # an AuthSwitchRequest was sent
    success: bool
    change_user: bool = False
    secure: bool = False  # the connection was TLS


def _nonce() -> bytes:
    return bytes(b % 94 + 33 for b in os.urandom(auth.SCRAMBLE_LENGTH))


class FakeMySQL8(FakeServer):
    """The fake MySQL 8 server (see the module docstring). `accounts` maps user names
    to Accounts; `sha2_cache` is caching_sha2_password's cache (user -> hash), which
    tests may clear or warm; `logins` records each authentication."""

    def __init__(
        self,
        accounts: Mapping[str, Account],
        script: Script | None = None,
        *,
        default_plugin: str = auth.CACHING_SHA2_PASSWORD,
        listen: Address | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        greeting = make_greeting(auth_plugin=default_plugin)
        if tls is not None:
            greeting = dataclasses.replace(
                greeting, capabilities=greeting.capabilities | Capability.CLIENT_SSL
            )
        super().__init__(script, greeting=greeting, listen=listen)
        self.tls = tls
        self.accounts = dict(accounts)
        self.keys = rsa_keys()
        self.sha2_cache: dict[str, bytes] = {}
        self.logins: list[Login] = []

    def warm_cache(self, user: str) -> None:
        """Cache the user's hash as a successful full authentication would."""
        self.sha2_cache[user] = auth.caching_sha2_hash(self.accounts[user].password.encode())

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = FakeConnection(next(self._ids), str(writer.get_extra_info("peername")))
        self.connections.append(conn)
        self._writers.add(writer)
        try:
            await _MySQL8Conversation(self, conn, reader, writer).run()
        except _ConnectionClosed:
            pass
        except (ConnectionError, ProtocolError):
            conn.closed_by_client = True
        finally:
            conn.closed = True
            self._writers.discard(writer)
            if not writer.transport.is_closing():
                writer.close()


class _MySQL8Conversation(_Conversation):
    server: FakeMySQL8
    secure = False  # the connection is TLS (after an SSLRequest)

    async def run(self) -> None:
        server = self.server
        nonce = _nonce()
        template = server.greeting
        greeting = Greeting(
            template.server_version,
            self.conn.connection_id,
            nonce,
            template.capabilities,
            template.charset,
            template.status,
            template.auth_plugin,
        )
        self.writer.write(encode_packet(0, messages.encode_greeting(greeting)))
        await self.writer.drain()
        seq, payload = await self._read_packet()
        response = messages.parse_handshake_response(payload, greeting.capabilities)
        if response.is_ssl_request:
            await self._start_tls()
            seq, payload = await self._read_packet()
            response = messages.parse_handshake_response(payload, greeting.capabilities)
        self.conn.handshake = response
        self.capabilities = response.capabilities & greeting.capabilities
        self.next_seq = seq + 1
        plugin = response.auth_plugin or greeting.auth_plugin
        if not await self._authenticate(response.username, plugin, response.auth_response, nonce):
            await self._send(_access_denied(response.username))
            await self._send(Close())
        await self._send(ok())

        while True:
            seq, payload = await self._read_packet()
            command = ReceivedCommand(self.conn.connection_id, seq, payload, self.capabilities)
            self.conn.commands.append(command)
            self.next_seq = seq + 1
            if command.command == Command.COM_CHANGE_USER:
                user, auth_response, change_plugin = self._parse_change_user(payload)
                plugin = change_plugin or greeting.auth_plugin
                if await self._authenticate(user, plugin, auth_response, nonce, change_user=True):
                    await self._send(ok())
                else:
                    await self._send(_access_denied(user))
                continue
            await self._send(server.reply_for(command))

    async def _start_tls(self) -> None:
        context = self.server.tls
        if context is None:
            raise ProtocolError("SSLRequest, and CLIENT_SSL was not offered")
        raw = self.writer.transport
        early = self.packets.take_pending()  # a ClientHello sent right behind the request
        if early:
            asyncio.get_running_loop().call_soon(
                feed_after_start_tls, raw, early, raw.get_protocol()
            )
        await self.writer.start_tls(context)
        self.secure = True

    def _parse_change_user(self, payload: bytes) -> tuple[str, bytes, str | None]:
        user, pos = wire.read_nul_bytes(payload, 1)
        if self.capabilities & Capability.CLIENT_SECURE_CONNECTION:
            length, pos = wire.read_uint(payload, pos, 1)
            auth_response, pos = wire.read_fixed_bytes(payload, pos, length)
        else:
            auth_response, pos = wire.read_nul_or_eof_bytes(payload, pos)
        plugin = messages.parse_change_user(payload, self.capabilities).auth_plugin
        return user.decode(), bytes(auth_response), plugin

    async def _read_auth(self) -> bytes:
        seq, payload = await self._read_packet()
        self.conn.auth_packets.append(payload)
        self.next_seq = seq + 1
        return payload

    async def _authenticate(
        self, user: str, plugin: str, response: bytes, nonce: bytes, change_user: bool = False
    ) -> bool:
        """Run one authentication up to (not including) its final OK or ERR."""
        server = self.server
        account = server.accounts.get(user)
        if account is None:
            server.logins.append(Login(user, plugin, "unknown-user", False, False, change_user))
            return False
        switched = plugin != account.plugin
        if switched:
            nonce = _nonce()
            await self._send(auth_switch_request(account.plugin, nonce))
            response = await self._read_auth()
        password = account.password.encode()

        def done(path: str, success: bool) -> bool:
            server.logins.append(
                Login(user, account.plugin, path, switched, success, change_user, self.secure)
            )
            return success

        if account.plugin == auth.NATIVE_PASSWORD:
            stored = auth.native_password_hash(password)
            return done("native", auth.verify_native_password(stored, nonce, response))
        if not response or response == b"\x00":
            return done("empty", not password)
        if account.plugin == auth.CACHING_SHA2_PASSWORD:
            cached = server.sha2_cache.get(user)
            if cached is not None:
                if not auth.verify_caching_sha2(cached, nonce, response):
                    return done("fast", False)
                await self._send(b"\x01" + bytes([auth.FAST_AUTH_SUCCESS]))
                return done("fast", True)
            await self._send(b"\x01" + bytes([auth.PERFORM_FULL_AUTHENTICATION]))
            answer = await self._read_auth()
            if answer != bytes([auth.REQUEST_PUBLIC_KEY]):
                # A cleartext password (NUL-terminated): acceptable over TLS only.
                if not self.secure:
                    return done("cleartext-refused", False)
                success = answer.rstrip(b"\x00") == password
                if success:
                    server.sha2_cache[user] = auth.caching_sha2_hash(password)
                return done("full-tls", success)
            await self._send(b"\x01" + server.keys.public_pem)
            encrypted = await self._read_auth()
            success = self._decrypt(encrypted, nonce) == password
            if success:
                server.sha2_cache[user] = auth.caching_sha2_hash(password)
            return done("full-rsa", success)
        if account.plugin == auth.SHA256_PASSWORD:
            if self.secure and response != b"\x01":
                return done("tls-cleartext", response.rstrip(b"\x00") == password)
            if response == b"\x01":  # the client asks for the public key
                await self._send(b"\x01" + server.keys.public_pem)
                response = await self._read_auth()
            return done("rsa", self._decrypt(response, nonce) == password)
        return done(f"unsupported plugin {account.plugin}", False)

    def _decrypt(self, data: bytes, nonce: bytes) -> bytes | None:
        try:
            plain = self.server.keys.private_key.decrypt(data, _OAEP)
        except ValueError:
            return None
        return auth.xor_password(plain, nonce).rstrip(b"\x00")


def _access_denied(user: str) -> bytes:
    return err(ER_ACCESS_DENIED, f"Access denied for user '{user}'@'localhost'", "28000")


@contextlib.contextmanager
def running_mysql8(
    accounts: Mapping[str, Account], script: Script | None = None, **kwargs: Any
) -> Iterator[FakeMySQL8]:
    """A FakeMySQL8 on its own event loop thread; `.address` is where it listens."""
    server = FakeMySQL8(accounts, script, **kwargs)
    with running_on_loop_thread(server, "fake-mysql8") as running:
        yield running
