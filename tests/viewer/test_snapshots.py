"""The viewer's main screens with seeded data, compared as text with the files in
tests/viewer/snapshots/ (VIEWER_UPDATE_SNAPSHOTS=1 rewrites them; review the diff).

Text rather than SVG: a review reads it, and it does not change with textual's
styling details; what it shows (columns, order, formatting, layout) is what matters.
"""

from __future__ import annotations

from mysqlproxy.viewer.app import HelpScreen, LogPrompt, QueryScreen, TopApp
from mysqlproxy.viewer.data import Poll, SourceUnavailable
from mysqlproxy.viewer.fake import ScriptedSource
from tests.viewer.seed import WINDOW, seeded_poll
from tests.viewer.support import SIZE, assert_snapshot, fake_explainer, until


def seeded(*extra: Poll | SourceUnavailable, **kwargs: object) -> TopApp:
    source = ScriptedSource([seeded_poll(), *extra], window_target=WINDOW)
    return TopApp(source, poll_interval=0.1, default_log_path="/var/tmp/mysqlproxy-slow.log",
                  **kwargs)  # type: ignore[arg-type]


async def test_main_screen() -> None:
    app = seeded()
    async with app.run_test(size=SIZE) as pilot:
        await until(lambda: app.polls_applied >= 1)
        await pilot.pause()
        assert_snapshot(app, "main")


async def test_main_screen_paused_filtered_with_drops() -> None:
    app = seeded(Poll(dropped=7))
    async with app.run_test(size=SIZE) as pilot:
        await until(lambda: app.polls_applied >= 2)
        await pilot.press("S", "p", "slash")
        app.filter_input.value = "db:shop"
        await pilot.press("enter")
        assert_snapshot(app, "main_paused_filtered")


async def test_detail_of_a_slow_query() -> None:
    app = seeded()
    async with app.run_test(size=SIZE) as pilot:
        await until(lambda: app.polls_applied >= 1)
        await pilot.press(*["down"] * 5, "enter")
        assert isinstance(app.screen, QueryScreen)
        await pilot.pause()
        assert_snapshot(app, "detail_event")


async def test_detail_of_a_digest_with_explain() -> None:
    ran: list[str] = []
    app = seeded(explainer=fake_explainer(ran))
    async with app.run_test(size=SIZE) as pilot:
        await until(lambda: app.polls_applied >= 1)
        await pilot.press("tab", "down", "enter")
        await until(lambda: len(ran) == 3, what="EXPLAIN")
        await pilot.pause()
        assert_snapshot(app, "detail_digest_explain")


async def test_help_screen() -> None:
    app = seeded()
    async with app.run_test(size=SIZE) as pilot:
        await until(lambda: app.polls_applied >= 1)
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        assert_snapshot(app, "help")


async def test_log_prompt() -> None:
    app = seeded()
    async with app.run_test(size=SIZE) as pilot:
        await until(lambda: app.polls_applied >= 1)
        await pilot.press("l")
        assert isinstance(app.screen, LogPrompt)
        await pilot.pause()
        assert_snapshot(app, "log_prompt")


async def test_unreachable_proxy() -> None:
    down = SourceUnavailable("cannot reach the admin interface at 127.0.0.1:4041: Can't "
                             "connect to MySQL server on '127.0.0.1' ([Errno 111] Connection "
                             "refused)")
    app = TopApp(ScriptedSource([down], window_target=WINDOW), retry_interval=3.0)
    async with app.run_test(size=SIZE) as pilot:
        await until(lambda: app.attempt == 1)
        await pilot.pause()
        assert_snapshot(app, "unreachable")
