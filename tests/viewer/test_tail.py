"""`tail`'s lines and loop, without a proxy: the text line is the one a text file
window writes, JSON lines carry every column, failures after the start are retried,
and a closed pipe ends the loop."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import threading

import pytest

from mysqlproxy.protocol.constants import Command, ServerStatus
from mysqlproxy.protocol.events import QueryEvent
from mysqlproxy.querylog import formats
from mysqlproxy.viewer import tail
from mysqlproxy.viewer.data import Poll, SourceUnavailable
from mysqlproxy.viewer.fake import ScriptedSource
from tests.viewer.seed import slow_queries


def test_the_text_line_is_the_text_format_of_the_event() -> None:
    event = dataclasses.replace(slow_queries()[0], query="SELECT 1\nFROM dual")
    original = QueryEvent(
        started_at=event.started_at, connection_id=event.connection_id,
        thread_id=event.thread_id, client_address=event.client, backend_address="b",
        user=event.user, schema=event.schema, command=Command.COM_QUERY, query=event.query,
        statement_id=None, params=None, first_byte_us=1, duration_us=event.duration_us,
        rows_sent=1, rows_affected=0, insert_id=0, warnings=0, error_code=0,
        error_message="", sql_state="", bytes_received=1, bytes_sent=1,
        status=ServerStatus(0), result_sets=1,
    )
    assert tail.text_line(event) == formats.format_text(original)
    assert tail.text_line(event) == (
        "2023-11-14 22:13:20 100 -- SELECT 1\\nFROM dual -- 82.000 ms\n")


def test_errors_and_prepared_statements_in_text() -> None:
    failed = slow_queries()[4]
    assert tail.text_line(failed).endswith(" -- 12400.000 ms -- error 1317\n")
    prepared = dataclasses.replace(slow_queries()[1], prepared=True,
                                   query=formats.PREPARED_MARK + "SELECT 2")
    assert f"-- {formats.PREPARED_MARK}SELECT 2 --" in tail.text_line(prepared)


def test_json_lines_carry_every_column() -> None:
    record = json.loads(tail.json_line(slow_queries()[4]))
    assert record["time"] == "2023-11-14T22:13:25+00:00"
    assert record["error_code"] == 1317 and record["user"] == "batch"
    assert record["query"] == "SELECT * FROM huge_table WHERE note LIKE '%x%'"
    assert set(record) >= {"id", "duration_us", "rows_sent", "client", "schema", "prepared"}


def test_stream_writes_every_event_and_retries() -> None:
    stop = threading.Event()
    events = slow_queries()
    lost = SourceUnavailable("lost the admin interface at x: gone")

    class Source(ScriptedSource):
        def poll(self) -> Poll:
            if not self.script:
                stop.set()
            return super().poll()

    source = Source([Poll(events=events[:2]), lost, Poll(events=events[2:], dropped=4)])
    out, err = io.StringIO(), io.StringIO()
    tail.stream(source, out, err, "jsonl", stop=stop, poll_interval=0, retry_interval=0)
    assert [json.loads(line)["id"] for line in out.getvalue().splitlines()] == [
        1, 2, 3, 4, 5, 6]
    assert err.getvalue().splitlines() == [
        "mysqlproxy tail: lost the admin interface at x: gone; retrying every 0s",
        "mysqlproxy tail: connected to the fake proxy again",
        "mysqlproxy tail: 4 events dropped (the proxy's ring overflowed)",
    ]


def test_the_first_failure_is_raised() -> None:
    source = ScriptedSource([SourceUnavailable("cannot reach it")])
    with pytest.raises(SourceUnavailable, match="cannot reach it"):
        tail.stream(source, io.StringIO(), io.StringIO())


def test_unknown_format() -> None:
    with pytest.raises(ValueError, match="format"):
        tail.stream(ScriptedSource(), io.StringIO(), io.StringIO(), "xml")


def test_a_closed_pipe_ends_it_and_closes_the_window() -> None:
    read_end, write_end = os.pipe()
    out = os.fdopen(write_end, "w")
    source = ScriptedSource([Poll(events=slow_queries()[:1])] * 50)
    assert not tail.reader_gone(write_end)()
    os.close(read_end)  # like `head` exiting
    assert tail.reader_gone(write_end)()
    tail.run(source, "text", out=out, err=io.StringIO())
    assert source.commands == ["close"]
    assert source.polls <= 1
    out.close()


def test_a_write_to_a_closed_pipe_ends_it() -> None:
    class Broken(io.StringIO):
        def write(self, text: str) -> int:
            raise BrokenPipeError(32, "Broken pipe")

    source = ScriptedSource([Poll(events=slow_queries()[:1])])
    tail.run(source, "text", out=Broken(), err=io.StringIO())
    assert source.commands == ["close"]
