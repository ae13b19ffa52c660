"""The addon API: how observers (query logging, digests, metrics, the printer, later
Lua and read-only mode) learn what passes through the proxy.

An addon is a plain object with methods named after the hooks it wants:

    class Counter:
        def query_completed(self, event: QueryEvent) -> None: ...

Hooks are frozen dataclasses; a hook's name is its class name in snake case, and the
addon method receives the hook's fields as arguments (after mitmproxy's hooks.py).
An addon that raises is logged and skipped: traffic goes on. Addons run on the event
loop and must not block; anything slow goes through a queue of its own.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, ClassVar

from mysqlproxy.protocol.events import QueryEvent

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ConnectionInfo:
    """A client connection as the proxy sees it when a hook fires."""

    connection_id: int
    client_address: str
    backend_address: str
    user: str = ""
    schema: str | None = None
    thread_id: int = 0
    server_version: str = ""
    connected_at: float = 0.0


class Hook:
    """Base of all hooks. Subclasses are frozen dataclasses."""

    name: ClassVar[str]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.name = re.sub(r"(?<!^)(?=[A-Z])", "_", cls.__name__).lower()

    def args(self) -> tuple[Any, ...]:
        return tuple(getattr(self, f.name) for f in fields(self))  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class ConnectionOpened(Hook):
    """A client authenticated with the backend (the session is ready for commands)."""

    connection: ConnectionInfo


@dataclass(frozen=True, slots=True)
class AuthenticationFailed(Hook):
    """The backend refused a client, or could not be reached."""

    connection: ConnectionInfo
    error_code: int
    error_message: str


@dataclass(frozen=True, slots=True)
class QueryCompleted(Hook):
    """A command's response is complete."""

    event: QueryEvent


@dataclass(frozen=True, slots=True)
class ConnectionClosed(Hook):
    """A client connection ended. `reason` is None for an orderly close."""

    connection: ConnectionInfo
    reason: str | None


ALL_HOOKS: tuple[type[Hook], ...] = (
    ConnectionOpened,
    AuthenticationFailed,
    QueryCompleted,
    ConnectionClosed,
)


class AddonManager:
    """Holds the addons and calls them. Handler lists are built when addons change, so
    a hook with no listener costs one dictionary look-up."""

    def __init__(self) -> None:
        self.addons: list[object] = []
        self._handlers: dict[str, list[tuple[object, Callable[..., Any]]]] = {}
        self._failures: dict[tuple[int, str], int] = {}

    def add(self, *addons: object) -> None:
        self.addons.extend(addons)
        self._rebuild()

    def remove(self, addon: object) -> None:
        self.addons.remove(addon)
        self._rebuild()

    def _rebuild(self) -> None:
        handlers: dict[str, list[tuple[object, Callable[..., Any]]]] = {}
        for hook in ALL_HOOKS:
            for addon in self.addons:
                method = getattr(addon, hook.name, None)
                if callable(method):
                    handlers.setdefault(hook.name, []).append((addon, method))
        self._handlers = handlers

    def wants(self, hook: type[Hook]) -> bool:
        return hook.name in self._handlers

    @property
    def wants_query_events(self) -> bool:
        return "query_completed" in self._handlers

    def trigger(self, hook: Hook) -> None:
        handlers = self._handlers.get(hook.name)
        if not handlers:
            return
        args = hook.args()
        for addon, method in handlers:
            try:
                method(*args)
            except Exception:
                self._report_failure(addon, hook.name)

    def query_completed(self, event: QueryEvent) -> None:
        """trigger(QueryCompleted(event)) without building the hook object: this one
        runs for every command."""
        for addon, method in self._handlers.get("query_completed", ()):
            try:
                method(event)
            except Exception:
                self._report_failure(addon, "query_completed")

    def _report_failure(self, addon: object, hook_name: str) -> None:
        key = (id(addon), hook_name)
        count = self._failures.get(key, 0) + 1
        self._failures[key] = count
        # The first failure with its traceback, then every 1000th, so a broken addon
        # cannot flood the log at query rate.
        if count == 1 or count % 1000 == 0:
            log.exception(
                "addon %s failed in %s (failure #%d); skipped, traffic goes on",
                type(addon).__name__,
                hook_name,
                count,
            )

    def failures(self, addon: object) -> int:
        return sum(n for (key, _), n in self._failures.items() if key == id(addon))
