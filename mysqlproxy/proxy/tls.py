"""TLS on the two legs: what `run` was asked for, and the SSL contexts made from it.

Toward clients the proxy terminates TLS (`ClientTls`): it offers CLIENT_SSL in the
greeting and upgrades the client leg when a client sends an SSLRequest. Toward the
backend (`BackendTls`) it sends its own SSLRequest when the mode asks for it:

    as-client        (default) TLS when the client uses TLS and the server offers it;
                     the server's certificate is not verified
    disabled         never
    preferred        whenever the server offers it; not verified
    required         always; a server without TLS is refused; not verified
    verify-ca        always, and the certificate must chain to --backend-ca (or the
                     system's CAs when none is given)
    verify-identity  as verify-ca, and the certificate must name the backend host

The modes are libmysqlclient's --ssl-mode values, plus as-client.

Only the verify modes authenticate the backend: with as-client, preferred and required
the leg is encrypted, but whoever answers on the backend's address (a man in the middle
included) gets what the client sends, so `run` warns when it terminates client TLS in
front of them. And when the client leg is TLS while the backend leg is plain, a client
that trusts its TLS connection may send its password in clear (caching_sha2_password
full authentication, sha256_password, mysql_clear_password): the session refuses such
an authentication with ERR 1045 rather than relay the password (see proxy/session.py).
"""

from __future__ import annotations

import asyncio
import datetime
import enum
import functools
import ssl
from dataclasses import dataclass
from typing import cast


class TlsConfigError(ValueError):
    """A certificate, key or CA file that cannot be used."""


class BackendTlsMode(enum.StrEnum):
    """When the backend leg uses TLS (see the module docstring)."""

    AS_CLIENT = "as-client"
    DISABLED = "disabled"
    PREFERRED = "preferred"
    REQUIRED = "required"
    VERIFY_CA = "verify-ca"
    VERIFY_IDENTITY = "verify-identity"

    @property
    def always(self) -> bool:
        """TLS to the backend whatever the client does, and refuse a server without it."""
        return self in (
            BackendTlsMode.REQUIRED, BackendTlsMode.VERIFY_CA, BackendTlsMode.VERIFY_IDENTITY
        )

    @property
    def verifies(self) -> bool:
        return self in (BackendTlsMode.VERIFY_CA, BackendTlsMode.VERIFY_IDENTITY)


@dataclass(frozen=True)
class ClientTls:
    """TLS toward clients: the server-side context, and whether plain clients are
    refused (ERR 3159, as the server's require_secure_transport does)."""

    context: ssl.SSLContext
    required: bool = False
    certificate: str = ""  # the certificate file, or "self-signed" (for status)


@dataclass(frozen=True)
class BackendTls:
    """TLS toward the backend: the mode and the client-side context."""

    mode: BackendTlsMode = BackendTlsMode.AS_CLIENT
    # None: the shared unverified context (as-client, preferred and required without a
    # client certificate). Disabled never starts TLS: its ssl_context raises.
    context: ssl.SSLContext | None = None
    # The files the context was made from (a runtime change of mode remakes it).
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None

    @property
    def ssl_context(self) -> ssl.SSLContext:
        """The context for the backend leg's TLS handshake (never asked for when
        disabled: that mode never starts TLS)."""
        if self.mode is BackendTlsMode.DISABLED:
            raise ValueError("--backend-tls disabled: no TLS to the backend")
        return self.context if self.context is not None else _unverified_context()

    @property
    def unauthenticated_warning(self) -> str | None:
        """What to warn about when clients get TLS but this mode does not verify the
        backend; None for the verify modes."""
        if self.mode.verifies:
            return None
        if self.mode is BackendTlsMode.DISABLED:
            leg = "is plain"
        else:
            leg = "is encrypted when TLS is used, but the backend's certificate is not checked"
        return (
            f"--backend-tls {self.mode}: the backend leg {leg}, so the backend is not "
            "authenticated (clients that verify the proxy's certificate get no such "
            "guarantee past it); use --backend-tls verify-ca or verify-identity"
        )


def _describe(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc)


def client_tls(cert_file: str, key_file: str | None, required: bool = False) -> ClientTls:
    """TLS toward clients from a certificate (chain) file and its key file."""
    context = _server_context()
    try:
        context.load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as exc:
        raise TlsConfigError(
            f"cannot load the certificate {cert_file}"
            + (f" and key {key_file}" if key_file else "")
            + f": {_describe(exc)}"
        ) from exc
    return ClientTls(context, required, cert_file)


def self_signed_client_tls(required: bool = False, hostnames: tuple[str, ...] = ()) -> ClientTls:
    """TLS toward clients with a throw-away self-signed certificate made now (for trying
    TLS out: clients cannot verify it). Needs the `cryptography` package."""
    import tempfile

    cert_pem, key_pem = self_signed_certificate(hostnames or ("localhost", "127.0.0.1"))
    context = _server_context()
    # load_cert_chain reads files only; the files live just long enough to be read.
    with tempfile.NamedTemporaryFile("wb", suffix=".pem") as pem:
        pem.write(key_pem + cert_pem)
        pem.flush()
        context.load_cert_chain(pem.name)
    return ClientTls(context, required, "self-signed")


def self_signed_certificate(hostnames: tuple[str, ...]) -> tuple[bytes, bytes]:
    """A self-signed certificate for `hostnames` (names or IP addresses), valid for a
    year, and its private key; both PEM."""
    import ipaddress

    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
    except ImportError as exc:
        raise TlsConfigError(
            "--tls-self-signed needs the cryptography package "
            "(pip install 'mysqlproxy[tls]'); or give --tls-cert and --tls-key"
        ) from exc
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for name in hostnames:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            names.append(x509.DNSName(name))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mysqlproxy self-signed")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(key, hashes.SHA256())
    )
    return (
        cert.public_bytes(serialization.Encoding.PEM),
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )


def backend_tls(
    mode: BackendTlsMode | str = BackendTlsMode.AS_CLIENT,
    ca_file: str | None = None,
    cert_file: str | None = None,
    key_file: str | None = None,
) -> BackendTls:
    """TLS toward the backend. A CA file is used only by the verify modes (as
    libmysqlclient does); a client certificate is presented whenever TLS is used."""
    try:
        mode = BackendTlsMode(mode)
    except ValueError:
        choices = ", ".join(m.value for m in BackendTlsMode)
        raise TlsConfigError(f"unknown backend TLS mode {mode!r} (one of {choices})") from None
    files = {"ca_file": ca_file, "cert_file": cert_file, "key_file": key_file}
    if not mode.verifies and cert_file is None:
        return BackendTls(mode, None, **files)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if mode.verifies:
        context.check_hostname = mode is BackendTlsMode.VERIFY_IDENTITY
        try:
            if ca_file is not None:
                context.load_verify_locations(ca_file)
            else:
                context.load_default_certs()
        except (OSError, ssl.SSLError) as exc:
            raise TlsConfigError(f"cannot load the CA file {ca_file}: {_describe(exc)}") from exc
    else:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if cert_file is not None:
        try:
            context.load_cert_chain(cert_file, key_file)
        except (OSError, ssl.SSLError) as exc:
            raise TlsConfigError(
                f"cannot load the backend client certificate {cert_file}: {_describe(exc)}"
            ) from exc
    return BackendTls(mode, context, **files)


def _server_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


@functools.cache
def _unverified_context() -> ssl.SSLContext:
    """Encryption without verification (libmysqlclient's PREFERRED and REQUIRED)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def describe_tls_error(exc: BaseException) -> str:
    """A TLS handshake failure in a few words for an ERR message."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return exc.reason or str(exc)
    if isinstance(exc, TimeoutError):
        return "TLS handshake timed out"
    return str(exc) or type(exc).__name__


def feed_after_start_tls(
    transport: asyncio.WriteTransport, data: bytes, replaced: object, tries: int = 3
) -> None:
    """Give bytes already read from the socket to the TLS protocol that `start_tls`
    installs on `transport` (in place of `replaced`), as if they had just been read:
    the start of a peer's TLS handshake that arrived in one chunk with its SSLRequest.
    Schedule it with call_soon just before awaiting start_tls: start_tls installs its
    protocol before its first await, and starts the handshake in a callback after this
    one. Should the protocol not be installed yet, this waits a loop turn (or aborts).
    TLS protocols are buffered protocols (get_buffer, buffer_updated), asyncio's and
    uvloop's alike."""
    if transport.is_closing():
        return
    protocol = transport.get_protocol()
    if protocol is replaced:
        if tries:
            asyncio.get_running_loop().call_soon(
                feed_after_start_tls, transport, data, replaced, tries - 1
            )
        else:
            transport.abort()
        return
    get_buffer = getattr(protocol, "get_buffer", None)
    if get_buffer is None:
        cast(asyncio.Protocol, protocol).data_received(data)
        return
    view = memoryview(data)
    while view:
        buffer = get_buffer(len(view))
        size = min(len(buffer), len(view))
        buffer[:size] = view[:size]
        cast(asyncio.BufferedProtocol, protocol).buffer_updated(size)
        view = view[size:]
