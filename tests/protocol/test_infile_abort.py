"""A server that gives up on a LOCAL INFILE transfer (a file packet out of order, or over
its max_allowed_packet) answers with an ERR at once, whatever sequence id it reached;
MariaDB then reads commands again, or says why once more (sequence id 0) and hangs up.
The ERR is the command's answer: relayed, the command failed, the connection back to
commands. (Found by the client fuzz test: the tracker used to call this malformed and
drop the ERR.)"""

from __future__ import annotations

import pytest

from mysqlproxy.protocol.errors import ProtocolError
from mysqlproxy.protocol.events import QueryEvent
from mysqlproxy.protocol.packets import encode_packet
from mysqlproxy.protocol.tracker import ConnectionTracker
from mysqlproxy.testing import packets as pf


def _in_transfer() -> ConnectionTracker:
    conv = pf.login()
    tracker = ConnectionTracker()
    for chunk in conv.chunks:
        feed = tracker.client_data if chunk.direction == pf.CLIENT else tracker.server_data
        feed(chunk.data)
    sent, answer = conv.command(pf.com_query("LOAD DATA LOCAL INFILE 'f' INTO TABLE t"),
                                pf.local_infile_request("f"))
    tracker.client_data(sent)
    tracker.server_data(answer)
    tracker.client_data(encode_packet(2, b"a\n") + encode_packet(3, b"b\n"))
    tracker.events.clear()
    return tracker


@pytest.mark.parametrize("sequence_id", [2, 3, 4, 9])
def test_err_during_transfer_fails_the_command(sequence_id: int) -> None:
    tracker = _in_transfer()
    out_of_order = encode_packet(
        sequence_id, pf.err(1156, "Got packets out of order", "08S01")
    ) + encode_packet(0, pf.err(1156, "Got packets out of order", "08S01"))
    assert tracker.server_data(out_of_order) == out_of_order
    (event,) = tracker.events
    assert isinstance(event, QueryEvent)
    assert (event.error_code, event.error_message) == (1156, "Got packets out of order")
    assert tracker.idle and tracker.current_command is None
    # More file data is no command: refused, as the server refuses it.
    with pytest.raises(ProtocolError, match="command packet has sequence id 4"):
        tracker.client_data(encode_packet(4, b"c\n"))


def test_commands_go_on_after_the_failed_transfer() -> None:
    tracker = _in_transfer()
    tracker.server_data(encode_packet(3, pf.err(1153, "Got a packet bigger than", "08S01")))
    ping = encode_packet(0, pf.com_ping())
    assert tracker.client_data(ping) == ping
    tracker.server_data(encode_packet(1, pf.ok()))
    assert [e.command for e in tracker.events if isinstance(e, QueryEvent)] == [3, 0x0E]
    assert tracker.idle


def test_anything_but_err_during_transfer_is_malformed() -> None:
    tracker = _in_transfer()
    with pytest.raises(ProtocolError, match="while the client was sending a file"):
        tracker.server_data(encode_packet(2, pf.ok()))
