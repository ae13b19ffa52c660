from __future__ import annotations

import io

from mysqlproxy.addons.printer import QueryPrinter, format_query_line
from mysqlproxy.protocol.constants import Command
from mysqlproxy.testing.events import make_query_event as make_event


def test_line_has_time_duration_user_schema_rows_and_query_on_one_line() -> None:
    line = format_query_line(make_event())
    assert line == (
        "2026-11-29 08:05:01.250     12.345 ms  #7 app@127.0.0.1:50000  db=shop  rows=3  "
        "SELECT * FROM orders"
    )


def test_errors_show_the_code_and_affected_rows_count_for_writes() -> None:
    assert "ERR 1146" in format_query_line(make_event(error_code=1146))
    assert "rows=5" in format_query_line(make_event(rows_sent=0, rows_affected=5))


def test_prepared_statements_show_command_and_parameters() -> None:
    line = format_query_line(
        make_event(
            command=Command.COM_STMT_EXECUTE,
            query="SELECT ? + ?",
            params=(1, "x"),
            statement_id=1,
        )
    )
    assert line.endswith("COM_STMT_EXECUTE SELECT ? + ?  -- params: 1, 'x'")


def test_printer_writes_one_line_per_event_to_its_outfile() -> None:
    out = io.StringIO()
    printer = QueryPrinter(out)
    printer.query_completed(make_event())
    printer.query_completed(make_event(command=Command.COM_PING, query=""))
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[1].endswith("COM_PING")
