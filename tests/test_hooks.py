from __future__ import annotations

import logging

import pytest

from mysqlproxy.hooks import (
    AddonManager,
    ConnectionClosed,
    ConnectionInfo,
    ConnectionOpened,
    QueryCompleted,
)
from mysqlproxy.testing.events import make_query_event as make_event

INFO = ConnectionInfo(connection_id=1, client_address="c", backend_address="b")


def test_hook_names_come_from_class_names() -> None:
    assert ConnectionOpened.name == "connection_opened"
    assert QueryCompleted.name == "query_completed"
    assert ConnectionClosed.name == "connection_closed"


def test_addons_receive_hook_fields_as_arguments() -> None:
    seen: list[tuple[str, object]] = []

    class Recorder:
        def connection_opened(self, connection: ConnectionInfo) -> None:
            seen.append(("opened", connection))

        def connection_closed(self, connection: ConnectionInfo, reason: str | None) -> None:
            seen.append(("closed", reason))

        def query_completed(self, event: object) -> None:
            seen.append(("query", event))

    manager = AddonManager()
    manager.add(Recorder())
    event = make_event()
    manager.trigger(ConnectionOpened(INFO))
    manager.query_completed(event)
    manager.trigger(QueryCompleted(event))
    manager.trigger(ConnectionClosed(INFO, "gone"))
    assert seen == [("opened", INFO), ("query", event), ("query", event), ("closed", "gone")]


def test_wants_query_events_follows_the_addons() -> None:
    class OnlyConnections:
        def connection_opened(self, connection: ConnectionInfo) -> None:
            pass

    class Queries:
        def query_completed(self, event: object) -> None:
            pass

    manager = AddonManager()
    manager.add(OnlyConnections())
    assert not manager.wants_query_events
    queries = Queries()
    manager.add(queries)
    assert manager.wants_query_events
    manager.remove(queries)
    assert not manager.wants_query_events


def test_a_failing_addon_is_logged_and_skipped(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[str] = []

    class Broken:
        def query_completed(self, event: object) -> None:
            raise RuntimeError("boom")

    class Healthy:
        def query_completed(self, event: object) -> None:
            calls.append("ok")

    broken = Broken()
    manager = AddonManager()
    manager.add(broken, Healthy())
    with caplog.at_level(logging.ERROR):
        for _ in range(3):
            manager.query_completed(make_event())
    assert calls == ["ok", "ok", "ok"]
    assert manager.failures(broken) == 3
    # Logged once with its traceback, not once per query.
    failures = [r for r in caplog.records if "Broken" in r.getMessage()]
    assert len(failures) == 1
    assert failures[0].exc_info is not None
