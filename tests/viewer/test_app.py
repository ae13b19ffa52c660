"""Every key of the viewer, driven with textual's pilot, the app fed from a scripted
data source."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from textual.widgets import Input

from mysqlproxy.viewer.app import (
    HelpScreen,
    LogPrompt,
    QueryScreen,
    TopApp,
    ViewFilter,
    format_us,
    severity_style,
)
from mysqlproxy.viewer.data import Poll, ProxyState, SourceUnavailable, WindowState
from mysqlproxy.viewer.fake import ScriptedSource
from tests.viewer.screen_text import screen_text
from tests.viewer.seed import DIGESTS, PROXY, WINDOW, seeded_poll, slow_queries
from tests.viewer.support import SIZE, fake_explainer, until


def seeded_app(*extra: Poll | SourceUnavailable, **kwargs: Any) -> tuple[TopApp, ScriptedSource]:
    source = ScriptedSource([seeded_poll(), *extra], window_target=WINDOW)
    kwargs.setdefault("poll_interval", 0.1)
    return TopApp(source, **kwargs), source


async def started(app: TopApp, polls: int = 1) -> None:
    await until(lambda: app.polls_applied >= polls, what=f"{polls} poll(s)")


def queries_shown(app: TopApp) -> list[str]:
    return [e.query for e in app.shown_events]


# --- the main screen ---------------------------------------------------------------------


async def test_newest_first_and_digests_by_total() -> None:
    app, _ = seeded_app()
    async with app.run_test(size=SIZE) as pilot:
        await started(app)
        await pilot.pause()
        assert queries_shown(app) == [q.query for q in reversed(slow_queries())]
        assert app.events_table.row_count == 6
        totals = [d.total_us for d in app.shown_digests]
        assert totals == sorted(totals, reverse=True)
        assert app.focused is app.events_table


async def test_q_quits() -> None:
    app, _ = seeded_app()
    async with app.run_test(size=SIZE) as pilot:
        await started(app)
        await pilot.press("q")
        await pilot.pause()
        assert not app.is_running


async def test_ctrl_c_quits_too() -> None:
    app, _ = seeded_app()
    async with app.run_test(size=SIZE) as pilot:
        await started(app)
        await pilot.press("ctrl+c")
        await pilot.pause()
        assert not app.is_running


async def test_p_pauses_and_resumes() -> None:
    more = [dataclasses.replace(e, id=e.id + 100, query=f"SELECT new {e.id}")
            for e in slow_queries()[:2]]
    app, source = seeded_app()
    async with app.run_test(size=SIZE) as pilot:
        await started(app)
        await pilot.press("p")
        assert app.paused
        source.push(Poll(events=more, dropped=3))
        await until(lambda: app.unseen == 2, what="the new events")
        await pilot.pause()
        assert "SELECT new 1" not in queries_shown(app)
        assert "PAUSED, 2 new" in str(app.events_table.border_title)
        assert "PAUSED" in screen_text(app).splitlines()[0]
        assert "dropped 3" in screen_text(app)  # the header stays live
        await pilot.press("p")
        assert not app.paused
        assert queries_shown(app)[:2] == ["SELECT new 2", "SELECT new 1"]
        assert "PAUSED" not in screen_text(app)


async def test_slash_filters_by_user_schema_and_words() -> None:
    app, _ = seeded_app()
    async with app.run_test(size=SIZE) as pilot:
        await started(app)
        await pilot.press("slash")
        assert app.focused is app.filter_input
        await pilot.press(*"user:report", "enter")
        assert app.filter_text == "user:report"
        assert [e.user for e in app.shown_events] == ["report"]
        assert len(app.shown_digests) == len(DIGESTS)  # digests have no user
        assert app.focused is app.events_table

        await pilot.press("slash", "ctrl+a", "ctrl+k", *"db:shop sleep", "enter")
        assert queries_shown(app) == ["SELECT SLEEP(0.5)", "SELECT SLEEP(0.2)"]
        assert [d.fingerprint for d in app.shown_digests] == ["select sleep(?)"]
        assert "filter db:shop sleep" in screen_text(app)

        await pilot.press("escape")  # clears the filter
        assert app.filter_text == ""
        assert len(app.shown_events) == 6


async def test_escape_in_the_filter_cancels() -> None:
    app, _ = seeded_app()
    async with app.run_test(size=SIZE) as pilot:
        await started(app)
        await pilot.press("slash", *"nothing", "escape")
        assert app.filter_text == ""
        assert not app.filter_input.has_class("shown")
        assert len(app.shown_events) == 6


async def test_typing_s_in_the_filter_does_not_sort() -> None:
    app, _ = seeded_app()
    async with app.run_test(size=SIZE) as pilot:
        await started(app)
        await pilot.press("slash", "s", "S", "p", "q", "l")
        assert app.filter_input.value == "sSpql"
        assert (app.sort_key, app.sort_descending, app.paused) == ("total_us", True, False)
        assert app.is_running


async def test_s_cycles_the_sort_column_and_shift_s_reverses() -> None:
    app, _ = seeded_app()
    async with app.run_test(size=SIZE) as pilot:
        await started(app)
        seen = []
        for _ in range(10):
            await pilot.press("s")
            seen.append(app.sort_key)
            key = app.sort_key
            values = [getattr(d, key) for d in app.shown_digests]
            if key == "fingerprint":
                assert values == sorted(values)
            else:
                assert values == sorted(values, reverse=True)
        assert sorted(seen) == sorted(["fingerprint", "count", "total_us", "mean_us", "p50_us",
                                       "p95_us", "p99_us", "max_us", "rows_per_call", "errors"])
        assert app.sort_key == "total_us"
        await pilot.press("S")
        assert not app.sort_descending
        totals = [d.total_us for d in app.shown_digests]
        assert totals == sorted(totals)
        assert "total ▲" in screen_text(app)
        await pilot.press("S")
        assert app.sort_descending


async def test_tab_switches_between_the_tables() -> None:
    app, _ = seeded_app()
    async with app.run_test(size=SIZE) as pilot:
        await started(app)
        assert app.focused is app.events_table
        await pilot.press("tab")
        assert app.focused is app.digests_table
        await pilot.press("tab")
        assert app.focused is app.events_table


async def test_question_mark_shows_help() -> None:
    app, _ = seeded_app()
    async with app.run_test(size=SIZE) as pilot:
        await started(app)
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        assert "pause or resume" in screen_text(app)
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)


# --- the detail screen ------------------------------------------------------------------


async def test_enter_shows_the_whole_query() -> None:
    app, _ = seeded_app()
    async with app.run_test(size=SIZE) as pilot:
        await started(app)
        await pilot.press("down", "down", "down", "down", "down", "enter")
        assert isinstance(app.screen, QueryScreen)
        text = screen_text(app)
        assert "JOIN customers c ON c.id = o.customer_id" in text  # laid out, not cut
        assert "WHERE o.created_at > '2024-01-01'" in text
        assert "--db-dsn" in text  # no side connection configured
        await pilot.press("escape")
        assert app.screen is app.screen_stack[0]
        assert app.events_table.cursor_row == 5


async def test_enter_on_a_digest_with_explain() -> None:
    ran: list[str] = []
    app, _ = seeded_app(explainer=fake_explainer(ran))
    async with app.run_test(size=SIZE) as pilot:
        await started(app)
        await pilot.press("tab", "down", "enter")
        screen = app.screen
        assert isinstance(screen, QueryScreen)
        await until(lambda: any(s.startswith("EXPLAIN") for s in ran), what="EXPLAIN")
        await pilot.pause()
        text = screen_text(app)
        assert "Using where; Using filesort" in text and "shop.o.customer_id" in text
        assert ran[0] == "SET SESSION TRANSACTION READ ONLY"
        assert ran[1:] == ["USE shop", "EXPLAIN " + DIGESTS[1].example]
        await pilot.press("e")  # again
        await until(lambda: len(ran) == 5, what="the second EXPLAIN")
        await pilot.press("q")  # back, not quit
        assert app.is_running and not isinstance(app.screen, QueryScreen)


async def test_explain_only_for_select() -> None:
    ran: list[str] = []
    app, _ = seeded_app(explainer=fake_explainer(ran))
    async with app.run_test(size=SIZE) as pilot:
        await started(app)
        await pilot.press("down", "down", "enter")  # the UPDATE
        await pilot.pause()
        assert "only SELECT statements are explained" in screen_text(app)
        assert ran == []


async def test_explain_errors_are_shown() -> None:
    def refuse(**params: Any) -> Any:
        import pymysql

        raise pymysql.err.OperationalError(2003, "Can't connect to MySQL server on 'db'")

    from mysqlproxy.viewer.explain import DatabaseDSN, Explainer

    app, _ = seeded_app(explainer=Explainer(DatabaseDSN(host="db"), connect=refuse))
    async with app.run_test(size=SIZE) as pilot:
        await started(app)
        await pilot.press("enter")
        await until(lambda: "Can't connect" in screen_text(app), what="the error")
        assert "EXPLAIN via root@db:3306" in screen_text(app)


# --- file logging windows ----------------------------------------------------------------


async def test_l_starts_a_file_window_and_shift_l_stops_it(tmp_path: Any) -> None:
    target = str(tmp_path / "slow.log")
    app, source = seeded_app()
    async with app.run_test(size=SIZE) as pilot:
        await started(app)
        await pilot.press("l")
        assert isinstance(app.screen, LogPrompt)
        await pilot.press("backspace", *"10", "enter")
        prompt_path = app.screen.query_one("#path", Input)
        assert app.focused is prompt_path
        prompt_path.value = target
        await pilot.press("enter")
        await until(lambda: source.commands, what="the LOG ON")
        assert source.commands == [f"start {target} 10m 50000us"]
        assert app.file_log_path == target
        await pilot.press("L")
        await until(lambda: len(source.commands) == 2, what="the LOG OFF")
        assert source.commands[1] == f"stop {target}"
        assert app.file_log_path is None


async def test_l_asks_again_for_bad_minutes_and_escape_cancels() -> None:
    app, source = seeded_app()
    async with app.run_test(size=SIZE) as pilot:
        await started(app)
        await pilot.press("l", "backspace", *"abc", "enter", "enter")
        assert isinstance(app.screen, LogPrompt)
        assert "minutes must be a number" in screen_text(app)
        await pilot.press("escape")
        assert not isinstance(app.screen, LogPrompt)
        assert source.commands == []


async def test_l_reports_a_refusal() -> None:
    app, source = seeded_app()
    source.fail_commands = "the admin interface refused: cannot open /x: Permission denied"
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await started(app)
        await pilot.press("l", "enter", "enter")
        await until(lambda: "file logging not started" in screen_text(app), what="the refusal")
        assert "Permission" in screen_text(app)
        assert app.file_log_path is None


async def test_shift_l_stops_the_only_file_window() -> None:
    app, source = seeded_app()
    async with app.run_test(size=SIZE) as pilot:
        await started(app)
        await pilot.press("L")
        await until(lambda: source.commands, what="the LOG OFF")
        assert source.commands == ["stop /var/log/mysqlproxy-slow.log"]


async def test_shift_l_without_a_file_window_says_so() -> None:
    state = dataclasses.replace(PROXY, windows=(WindowState(WINDOW, "ring", "open", 30.0),))
    app, source = seeded_app(Poll(proxy=state))
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await started(app, 2)
        await pilot.press("L")
        await until(lambda: "no file logging window to stop" in screen_text(app),
                    what="the warning")
        assert source.commands == []


# --- the proxy's state, drops, trouble ---------------------------------------------------------


async def test_the_header_and_drops() -> None:
    app, _ = seeded_app(Poll(dropped=40), Poll(dropped=2))
    async with app.run_test(size=SIZE) as pilot:
        await started(app, 3)
        await pilot.pause()
        first, second = screen_text(app).splitlines()[:2]
        assert "backend 127.0.0.1:3306" in first and "connections 12" in first
        assert "q/s 1,234" in first and "slow ≥ 50ms" in first and "dropped 42" in first
        assert second == (" windows ring:viewer-test (this viewer) 29s  ·  "
                          "/var/log/mysqlproxy-slow.log 4m12s")


async def test_unreachable_then_connected() -> None:
    down = SourceUnavailable("cannot reach the admin interface at 127.0.0.1:4041: refused")
    source = ScriptedSource([down, down, seeded_poll()], window_target=WINDOW)
    app = TopApp(source, poll_interval=0.1, retry_interval=0.2)
    async with app.run_test(size=SIZE) as pilot:
        await until(lambda: app.attempt == 2, what="two attempts")
        await pilot.pause()
        text = screen_text(app)
        assert "cannot reach the admin interface at 127.0.0.1:4041: refused" in text
        assert "retrying every 0.2s (attempt 2)" in text
        await started(app)
        await pilot.pause()
        assert not app.problem and not app.banner.has_class("shown")
        assert len(app.shown_events) == 6


async def test_lost_then_back_says_so() -> None:
    lost = SourceUnavailable("lost the admin interface at 127.0.0.1:4041: gone")
    app, _ = seeded_app(lost, Poll(), retry_interval=1.0)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await until(lambda: app.attempt == 1, what="the loss")
        await pilot.pause()
        assert "showing the last data received" in screen_text(app)
        await until(lambda: not app.problem, what="the reconnection")
        await until(lambda: "connected to the fake proxy again" in screen_text(app),
                    what="the notice")


async def test_the_list_is_bounded_and_keeps_up_with_a_big_batch() -> None:
    many = [dataclasses.replace(slow_queries()[1], id=1000 + n, query=f"SELECT {n}")
            for n in range(5000)]
    app, _ = seeded_app(Poll(events=many), max_events=200)
    async with app.run_test(size=SIZE) as pilot:
        await started(app, 2)
        await pilot.pause()
        assert app.events_table.row_count == 200
        assert queries_shown(app)[0] == "SELECT 4999"
        assert queries_shown(app)[-1] == "SELECT 4800"
        assert app.events_received == 5006


async def test_the_selected_row_stays_selected_as_events_arrive() -> None:
    more = [dataclasses.replace(slow_queries()[1], id=200 + n, query=f"SELECT more {n}")
            for n in range(3)]
    app, source = seeded_app()
    async with app.run_test(size=SIZE) as pilot:
        await started(app)
        await pilot.press("down", "down")
        chosen = app.shown_events[2]
        source.push(Poll(events=more))
        await until(lambda: app.events_received == 9, what="the new events")
        await pilot.pause()
        assert app.events_table.cursor_row == 5
        assert app.shown_events[app.events_table.cursor_row] is chosen


async def test_resize_gives_the_query_the_room() -> None:
    app, _ = seeded_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await started(app)
        narrow = app.events_table.column_widths()
        await pilot.resize_terminal(180, 30)
        await pilot.pause()
        wide = app.events_table.column_widths()
        assert wide[:-1] == narrow[:-1] and wide[-1] == narrow[-1] + 80
        assert "GROUP BY customer_id HAVING SUM(total) > 1000" in screen_text(app)


# --- pieces -------------------------------------------------------------------------------


def test_durations_and_severity() -> None:
    assert [format_us(v) for v in (850, 12_345, 1_250_000, 123_000_000)] == [
        "850us", "12.3ms", "1.25s", "2m03s"]
    assert [severity_style(v) for v in (50_000, 500_000, 5_000_000, 50_000_000)] == [
        "green", "yellow", "dark_orange", "bold red"]


def test_view_filter() -> None:
    event = slow_queries()[2]
    assert ViewFilter.parse("user:REP db:analy sum").keeps_event(event)
    assert not ViewFilter.parse("user:app").keeps_event(event)
    assert ViewFilter.parse("10.0.0.9").keeps_event(event)  # the client
    assert not ViewFilter.parse("")
    assert ViewFilter.parse("schema:shop").keeps_digest(DIGESTS[0])
    assert not ViewFilter.parse("schema:shop").keeps_digest(DIGESTS[2])


def test_the_state_record_defaults() -> None:
    assert ProxyState().qps is None
    assert os.environ["TZ"] == "UTC"


async def test_cursor_keys_and_clicks() -> None:
    many = [dataclasses.replace(slow_queries()[1], id=1000 + n, query=f"SELECT {n}")
            for n in range(100)]
    app, _ = seeded_app(Poll(events=many))
    async with app.run_test(size=SIZE) as pilot:
        await started(app, 2)
        await pilot.pause()
        table = app.events_table
        await pilot.press("end")
        assert table.cursor_row == 105
        await pilot.press("home", "pagedown")
        assert table.cursor_row > 10
        await pilot.press("pageup", "down")
        assert table.cursor_row == 1
        await pilot.click("#events", offset=(20, 4))  # border, header, rows 0 and 1
        assert table.cursor_row == 2
        await pilot.click("#events", offset=(20, 4))  # again: open it
        assert isinstance(app.screen, QueryScreen)


async def test_a_huge_statement_is_cut_on_the_detail_screen() -> None:
    huge = dataclasses.replace(slow_queries()[1], id=99,
                               query="INSERT INTO t VALUES " + ", ".join(["(1, 'x')"] * 20_000))
    app, _ = seeded_app(Poll(events=[huge]))
    async with app.run_test(size=SIZE) as pilot:
        await started(app, 2)
        await pilot.press("enter")
        assert isinstance(app.screen, QueryScreen)
        await until(lambda: "the first 10,000 of 200,019 characters" in screen_text(app),
                    what="the note")
