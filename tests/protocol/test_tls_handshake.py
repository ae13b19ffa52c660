"""The connection phase with TLS, sans-io: the SSLRequest as a phase of the tracker,
the SSLRequest the proxy derives for the backend, and the renumbering of the auth phase
when only one leg uses TLS. Each input is fed whole, one byte at a time, and with data
behind it."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mysqlproxy.protocol import messages
from mysqlproxy.protocol.auth_sequence import (
    AuthSequenceShift,
    CleartextWatch,
    change_user_auth,
    sends_cleartext,
)
from mysqlproxy.protocol.constants import MASKED_CAPABILITIES, Capability, Command
from mysqlproxy.protocol.errors import ProtocolError, UnsupportedFeature
from mysqlproxy.protocol.events import Authenticated
from mysqlproxy.protocol.packets import encode_packet
from mysqlproxy.protocol.tracker import (
    C_AUTH,
    C_COMMAND,
    C_HANDSHAKE,
    C_TLS,
    ConnectionTracker,
)
from mysqlproxy.testing import packets as pk

SSL = Capability.CLIENT_SSL
SERVER_WITHOUT_SSL = pk.MARIADB_SERVER_CAPABILITIES & ~SSL
CLIENT_HELLO = b"\x16\x03\x01\x00\x05hello"  # what a TLS record looks like to the tracker


def _tracker(offer_ssl: bool = True) -> ConnectionTracker:
    return ConnectionTracker(offered_capabilities=SSL if offer_ssl else None, clock_ns=lambda: 0)


def _caps(packet: bytes) -> Capability:
    return Capability(int.from_bytes(packet[4:8], "little"))


def _feed(feed: object, data: bytes, bytewise: bool) -> bytes:
    assert callable(feed)
    if not bytewise:
        return bytes(feed(data))
    return b"".join(bytes(feed(data[i : i + 1])) for i in range(len(data)))


# --- the greeting ---------------------------------------------------------------------


@pytest.mark.parametrize("server_caps", [pk.MARIADB_SERVER_CAPABILITIES, SERVER_WITHOUT_SSL],
                         ids=["server-offers-tls", "server-without-tls"])
def test_greeting_offers_ssl_when_the_proxy_terminates_tls(server_caps: Capability) -> None:
    out = _tracker().server_data(encode_packet(0, pk.greeting_mariadb(server_caps)))
    seen = messages.parse_greeting(out[4:]).capabilities
    assert seen & SSL
    assert seen == (server_caps & ~MASKED_CAPABILITIES) | SSL


def test_greeting_masks_ssl_without_a_certificate() -> None:
    out = _tracker(offer_ssl=False).server_data(encode_packet(0, pk.greeting_mariadb()))
    assert not messages.parse_greeting(out[4:]).capabilities & SSL


# --- the SSLRequest as a phase ----------------------------------------------------------


@pytest.mark.parametrize("bytewise", [False, True], ids=["whole", "bytewise"])
@pytest.mark.parametrize("backend_tls", [False, True], ids=["plain-backend", "tls-backend"])
def test_ssl_request_then_handshake_response_at_sequence_two(
    bytewise: bool, backend_tls: bool
) -> None:
    tracker = _tracker()
    tracker.server_data(encode_packet(0, pk.greeting_mariadb()))
    request = encode_packet(1, pk.ssl_request())
    assert _feed(tracker.client_data, request, bytewise) == b""  # nothing to forward
    assert tracker.client_phase == C_TLS and tracker.client_tls
    assert tracker.tls_early_data == b""
    with pytest.raises(ProtocolError, match="TLS handshake"):
        tracker.client_data(CLIENT_HELLO)
    tracker.tls_established()
    assert tracker.client_phase == C_HANDSHAKE
    tracker.backend_tls = backend_tls
    response = encode_packet(2, pk.handshake_response(pk.CLIENT_CAPABILITIES | SSL))
    out = _feed(tracker.client_data, response, bytewise)
    assert out[3] == 2  # renumbering is the session's business (AuthSequenceShift)
    assert bool(_caps(out) & SSL) is backend_tls  # says what the backend leg does
    assert out[8:] == response[8:]
    assert tracker.client_phase == C_AUTH and tracker.user == "app"
    tracker.server_data(encode_packet(3, pk.ok()))
    assert tracker.client_phase == C_COMMAND
    assert [type(e) for e in tracker.events] == [Authenticated]
    query = encode_packet(0, pk.com_query("SELECT 1"))
    assert tracker.client_data(query) == query
    assert tracker.current_command == Command.COM_QUERY


def test_tls_bytes_behind_the_ssl_request_are_kept_for_the_io_layer() -> None:
    tracker = _tracker()
    tracker.server_data(encode_packet(0, pk.greeting_mariadb()))
    assert tracker.client_data(encode_packet(1, pk.ssl_request()) + CLIENT_HELLO) == b""
    assert tracker.tls_early_data == CLIENT_HELLO
    tracker.tls_established()
    assert tracker.tls_early_data == b""


def test_plain_handshake_response_gets_ssl_flag_for_a_tls_backend() -> None:
    tracker = _tracker(offer_ssl=False)
    tracker.server_data(encode_packet(0, pk.greeting_mariadb()))
    tracker.backend_tls = True
    response = encode_packet(1, pk.handshake_response())
    out = tracker.client_data(response)
    assert _caps(out) & SSL and not _caps(response) & SSL
    request = messages.ssl_request_for(out[4:])
    assert len(request) == 32 and request == out[4:36]
    parsed = messages.parse_handshake_response(request, pk.MARIADB_SERVER_CAPABILITIES)
    assert parsed.is_ssl_request


def test_ssl_request_refused_when_not_offered() -> None:
    tracker = _tracker(offer_ssl=False)
    tracker.server_data(encode_packet(0, pk.greeting_mariadb()))
    with pytest.raises(UnsupportedFeature, match="TLS"):
        tracker.client_data(encode_packet(1, pk.ssl_request()))


@pytest.mark.parametrize(
    ("packets", "error"),
    [
        # A full response claiming TLS that never happened.
        ([encode_packet(1, pk.handshake_response(pk.CLIENT_CAPABILITIES | SSL))], "no SSLRequest"),
        # After TLS, the response must be packet 2.
        ([encode_packet(1, pk.ssl_request()), encode_packet(1, pk.handshake_response())],
         "sequence id 1, expected 2"),
        ([encode_packet(1, pk.ssl_request()), encode_packet(2, pk.ssl_request())],
         "second SSLRequest"),
    ],
    ids=["ssl-flag-without-request", "wrong-sequence", "two-requests"],
)
def test_out_of_step_tls_handshakes(packets: list[bytes], error: str) -> None:
    tracker = _tracker()
    tracker.server_data(encode_packet(0, pk.greeting_mariadb()))
    with pytest.raises(ProtocolError, match=error):
        for packet in packets:
            tracker.client_data(packet)
            if tracker.client_phase == C_TLS:
                tracker.tls_established()


def test_tls_established_without_request() -> None:
    with pytest.raises(ProtocolError):
        _tracker().tls_established()


# --- renumbering the auth phase ----------------------------------------------------------

# A login with an auth switch, as the client numbers it after an SSLRequest (1).
CLIENT_SIDE = [
    encode_packet(2, pk.handshake_response()),
    encode_packet(4, b"\x01" + b"x" * 20),
]
SERVER_SIDE = [
    encode_packet(3, pk.auth_switch_request()),
    encode_packet(5, pk.ok()),
]


def _shifted(packets: list[bytes], by: int) -> bytes:
    return b"".join(p[:3] + bytes([(p[3] + by) & 0xFF]) + p[4:] for p in packets)


@pytest.mark.parametrize("bytewise", [False, True], ids=["whole", "bytewise"])
@pytest.mark.parametrize("offset", [-1, 1])
def test_auth_phase_renumbered_both_ways_until_ok(bytewise: bool, offset: int) -> None:
    shift = AuthSequenceShift(offset)
    assert _feed(shift.to_server, CLIENT_SIDE[0], bytewise) == _shifted(CLIENT_SIDE[:1], offset)
    server = _shifted(SERVER_SIDE[:1], offset)
    assert _feed(shift.to_client, server, bytewise) == SERVER_SIDE[0]
    assert _feed(shift.to_server, CLIENT_SIDE[1], bytewise) == _shifted(CLIENT_SIDE[1:], offset)
    assert not shift.done
    # The OK ends the phase; what follows in the same chunk passes unchanged.
    behind = encode_packet(1, b"\x00after")
    assert _feed(shift.to_client, _shifted(SERVER_SIDE[1:], offset) + behind, bytewise) == (
        SERVER_SIDE[1] + behind
    )
    assert shift.done
    command = encode_packet(0, pk.com_query("SELECT 1"))
    assert shift.to_server(command) == command


def test_auth_phase_ended_by_err() -> None:
    shift = AuthSequenceShift(-1)
    assert shift.to_client(encode_packet(2, pk.err(1045, "Access denied"))) == encode_packet(
        3, pk.err(1045, "Access denied")
    )
    assert shift.done


def test_more_data_and_switch_do_not_end_the_phase() -> None:
    shift = AuthSequenceShift(1)
    shift.to_client(encode_packet(3, pk.auth_more_data(b"\x04")))
    shift.to_client(encode_packet(5, pk.auth_switch_request()))
    shift.to_client(encode_packet(7, b""))  # an empty packet is neither
    assert not shift.done
    assert shift.to_client(encode_packet(0, b"\x00")) == encode_packet(255, b"\x00")
    assert shift.done


@st.composite
def _auth_exchange(draw: st.DrawFn) -> tuple[list[bytes], bytes]:
    """Server packets of an auth phase (more data, switches, empty packets, any
    sequence ids), ending with OK or ERR, then bytes behind it."""
    middle = draw(
        st.lists(
            st.tuples(
                st.integers(0, 255),
                st.one_of(
                    st.just(b""),
                    st.binary(min_size=1, max_size=40).map(lambda b: b"\x01" + b),
                    st.binary(min_size=1, max_size=40).map(lambda b: b"\xfe" + b),
                ),
            ),
            max_size=5,
        )
    )
    last = draw(st.sampled_from([pk.ok(), pk.err(1045, "Access denied")]))
    packets = [encode_packet(seq, payload) for seq, payload in middle]
    packets.append(encode_packet(draw(st.integers(0, 255)), last))
    return packets, draw(st.binary(max_size=20))


@settings(max_examples=200, deadline=None)
@given(exchange=_auth_exchange(), offset=st.sampled_from([-1, 1]), cuts=st.data())
def test_renumbering_does_not_depend_on_chunking(
    exchange: tuple[list[bytes], bytes], offset: int, cuts: st.DataObject
) -> None:
    packets, behind = exchange
    data = b"".join(packets) + behind
    points = sorted(cuts.draw(st.lists(st.integers(0, len(data)), max_size=8)))
    chunks = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    shift = AuthSequenceShift(offset)
    out = b"".join(shift.to_client(chunk) for chunk in chunks)
    assert shift.done
    assert out == _shifted(packets, -offset) + behind


# --- cleartext passwords toward a plain backend leg (CleartextWatch) --------------------

_SWITCH_NATIVE = b"\xfemysql_native_password\x00" + b"n" * 20 + b"\x00"


@pytest.mark.parametrize(
    ("plugin", "packets", "found"),
    [
        # caching_sha2_password: fast auth success, then OK: nothing asked in clear.
        ("caching_sha2_password", [b"\x01\x03", b"\x00\x00\x00\x02\x00\x00\x00"], None),
        # perform full authentication: the client would answer with its password.
        ("caching_sha2_password", [b"\x01\x04"], (3, "caching_sha2_password full")),
        # A switch to caching_sha2_password, then full authentication.
        (
            "mysql_native_password",
            [b"\xfecaching_sha2_password\x00" + b"s" * 20 + b"\x00", b"\x01\x04"],
            (4, "full authentication"),
        ),
        # The same two bytes under another plugin are that plugin's business.
        ("client_ed25519", [b"\x01\x04"], None),
        ("mysql_native_password", [_SWITCH_NATIVE, b"\x00\x00\x00\x02\x00\x00\x00"], None),
        ("caching_sha2_password", [b"\xfemysql_clear_password\x00"], (3, "mysql_clear_password")),
        ("caching_sha2_password", [b"\xfesha256_password\x00" + b"s" * 20 + b"\x00"],
         (3, "sha256_password")),
        ("mysql_native_password", [b"\xfedialog\x00\x04Password: "], (3, "dialog")),
        # sha256_password's public key (after the client's 0x01) is not a request.
        ("sha256_password", [b"\x01-----BEGIN PUBLIC KEY-----\n" + b"k" * 400], None),
        # ERR ends the watch: what follows is not authentication.
        ("caching_sha2_password", [b"\xff\x15\x04#28000denied", b"\x01\x04"], None),
    ],
)
@pytest.mark.parametrize("bytewise", [False, True], ids=["whole", "bytewise"])
def test_cleartext_watch(
    plugin: str, packets: list[bytes], found: tuple[int, str] | None, bytewise: bool
) -> None:
    """Server packets of a TLS client's login (numbered for it: the first at id 3)."""
    watch = CleartextWatch(plugin)
    data = b"".join(encode_packet(3 + i, p) for i, p in enumerate(packets))
    chunks = [data[i : i + 1] for i in range(len(data))] if bytewise else [data]
    results = [r for r in map(watch.feed, chunks) if r is not None]
    if found is None:
        assert results == []
    else:
        assert len(results) == 1
        seq, words = results[0]
        assert seq == found[0] and found[1] in words


def test_cleartext_watch_done_after_ok() -> None:
    watch = CleartextWatch("caching_sha2_password")
    assert watch.feed(encode_packet(3, b"\x01\x03")) is None and not watch.done
    assert watch.feed(encode_packet(4, b"\x00\x00\x00\x02\x00\x00\x00")) is None
    assert watch.done


@pytest.mark.parametrize(
    ("plugin", "response", "cleartext"),
    [
        ("mysql_clear_password", b"secret\x00", True),
        ("mysql_clear_password", b"\x00", False),  # no password
        ("sha256_password", b"secret\x00", True),
        ("sha256_password", b"\x01", False),  # asks for the public key (RSA follows)
        ("dialog", b"secret\x00", True),
        ("caching_sha2_password", b"s" * 32, False),  # a scramble
        ("mysql_native_password", b"n" * 20, False),
        (None, b"anything", False),
    ],
)
def test_sends_cleartext(plugin: str | None, response: bytes, cleartext: bool) -> None:
    assert sends_cleartext(plugin, response) is cleartext


def test_change_user_auth() -> None:
    payload = (
        bytes((Command.COM_CHANGE_USER,)) + b"bob\x00" + bytes((7,)) + b"secret\x00"
        + b"db\x00" + b"\x2d\x00" + b"mysql_clear_password\x00"
    )
    assert change_user_auth(payload, secure_connection=True) == (
        b"secret\x00", "mysql_clear_password"
    )
