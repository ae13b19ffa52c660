"""Helpers for driving the viewer in tests: a started app fed from a ScriptedSource,
a fake side connection for EXPLAIN, and text snapshots."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mysqlproxy.viewer.app import TopApp
from mysqlproxy.viewer.explain import DatabaseDSN, Explainer
from tests.viewer.screen_text import screen_text

SIZE = (140, 40)
SNAPSHOTS = Path(__file__).parent / "snapshots"
UPDATE_ENV = "VIEWER_UPDATE_SNAPSHOTS"


async def until(predicate: Callable[[], object], timeout: float = 5.0,
                what: str = "the condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def assert_snapshot(app: TopApp, name: str) -> None:
    """The screen as text equals tests/viewer/snapshots/NAME.txt. With
    VIEWER_UPDATE_SNAPSHOTS=1 the file is written instead (review the diff)."""
    text = screen_text(app)
    path = SNAPSHOTS / f"{name}.txt"
    if os.environ.get(UPDATE_ENV):
        path.write_text(text)
        return
    if not path.exists():
        pytest.fail(f"no snapshot {path.name}; run with {UPDATE_ENV}=1 and review it")
    expected = path.read_text()
    assert text == expected, f"the screen differs from {path.name}:\n{text}"


PLAN_COLUMNS = ["id", "select_type", "table", "type", "possible_keys", "key", "key_len", "ref",
                "rows", "Extra"]
PLAN_ROWS = [(1, "SIMPLE", "o", "range", "created_at", "created_at", "5", None, 1234,
              "Using where; Using filesort"),
             (1, "SIMPLE", "c", "eq_ref", "PRIMARY", "PRIMARY", "4", "shop.o.customer_id", 1,
              "")]


class FakeSideConnection:
    """What Explainer uses of a PyMySQL connection; records what it ran."""

    def __init__(self, log: list[str]) -> None:
        self.log = log
        self.description: list[tuple[str]] | None = None
        self.rows: list[tuple[Any, ...]] = []

    def cursor(self) -> FakeSideConnection:
        return self

    def __enter__(self) -> FakeSideConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def select_db(self, name: str) -> None:
        self.log.append(f"USE {name}")

    def execute(self, statement: str) -> None:
        self.log.append(statement)
        if statement.startswith("EXPLAIN"):
            self.description = [(c,) for c in PLAN_COLUMNS]
            self.rows = list(PLAN_ROWS)

    def fetchall(self) -> list[tuple[Any, ...]]:
        return self.rows

    def close(self) -> None:
        pass


def fake_explainer(log: list[str]) -> Explainer:
    return Explainer(DatabaseDSN(host="db", port=3306, user="ops"),
                     connect=lambda **params: FakeSideConnection(log))
