"""MariaDB's client_ed25519 exchanges, byte by byte: the server switches every client to
it with a 32-byte nonce (the greeting's 20 bytes are not enough) and the client answers
with a 64-byte signature. The tracker relays both unread and follows user and schema
across COM_CHANGE_USER. (tests/proxy/test_ed25519.py does the same against MariaDB.)"""

from __future__ import annotations

from mysqlproxy.protocol.constants import Command, ServerStatus
from mysqlproxy.protocol.events import Authenticated, AuthenticationFailed, QueryEvent
from mysqlproxy.testing import packets as pk
from mysqlproxy.testing.packets import CLIENT, SERVER, Conversation
from tests.protocol.support import SPLITTERS, query_event, replay

NONCE = bytes(range(100, 132))  # 32 bytes
SIGNATURE = bytes(range(64))


def test_login_and_change_user_with_client_ed25519() -> None:
    conv = Conversation()
    conv.server(pk.greeting_mariadb())
    # A client that starts with client_ed25519 sends no auth data yet.
    conv.client(pk.handshake_response(user="ed", auth_plugin="client_ed25519"))
    conv.server(pk.auth_switch_request("client_ed25519", NONCE)[:-1])  # no trailing NUL
    conv.client(SIGNATURE)
    conv.server(pk.ok())
    sent, answer = conv.command(
        pk.com_change_user("ed2", b"\x01" * 20, "shop"),
        pk.auth_switch_request("client_ed25519", NONCE)[:-1],
    )
    conv.client(SIGNATURE)
    ok = conv.server(pk.ok())
    conv.command(
        pk.com_query("SELECT 1"), *pk.text_result_set(["1"], [[b"1"]], deprecate_eof=False)
    )
    refused_sent, refused = conv.command(
        pk.com_change_user("ed3", b"\x01" * 20),
        pk.auth_switch_request("client_ed25519", NONCE)[:-1],
    )
    conv.client(SIGNATURE)
    err = conv.server(pk.err(1045, "Access denied for user 'ed3'", "28000"))
    assert [c.data[3] for c in conv.chunks[:5]] == [0, 1, 2, 3, 4]
    for name, split in SPLITTERS.items():
        result = replay(conv.chunks, split)
        assert result.to_server == conv.bytes_from(CLIENT), name
        assert result.to_client[-len(err) :] == conv.bytes_from(SERVER)[-len(err) :], name
        events = result.events
        assert events[0] == Authenticated("ed", None, 42, pk.MARIADB_VERSION), name
        assert events[1] == query_event(
            Command.COM_CHANGE_USER,
            "ed2",
            user="ed",
            bytes_received=len(sent) + 4 + len(SIGNATURE),
            bytes_sent=len(answer) + len(ok),
        ), name
        assert events[2] == Authenticated("ed2", "shop", 42, pk.MARIADB_VERSION), name
        query = events[3]
        assert isinstance(query, QueryEvent), name
        assert (query.query, query.user, query.schema) == ("SELECT 1", "ed2", "shop"), name
        assert events[4] == AuthenticationFailed("ed3", 1045, "Access denied for user 'ed3'")
        assert events[5] == query_event(
            Command.COM_CHANGE_USER,
            "ed3",
            user="ed2",
            schema="shop",
            bytes_received=len(refused_sent) + 4 + len(SIGNATURE),
            bytes_sent=len(refused) + len(err),
            error_code=1045,
            error_message="Access denied for user 'ed3'",
            sql_state="28000",
            status=ServerStatus(0),
        ), name
        assert (result.tracker.user, result.tracker.schema) == ("ed2", "shop"), name
        assert result.tracker.idle, name
