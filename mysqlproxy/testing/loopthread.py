"""Run an asyncio server object on its own event loop thread, for blocking tests."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from typing import Protocol, TypeVar


class AsyncService(Protocol):
    async def start(self) -> object: ...

    async def close(self) -> None: ...


ServiceT = TypeVar("ServiceT", bound=AsyncService)


@contextlib.contextmanager
def running_on_loop_thread(service: ServiceT, name: str) -> Iterator[ServiceT]:
    """Start `service` on a new event loop in a daemon thread; close it on exit. A
    failure to start is raised here, in the caller's thread."""
    loop = asyncio.new_event_loop()
    started = threading.Event()
    failure: list[BaseException] = []
    stop = asyncio.Event()

    async def main() -> None:
        try:
            await service.start()
        except BaseException as exc:
            failure.append(exc)
            started.set()
            return
        started.set()
        await stop.wait()
        await service.close()

    thread = threading.Thread(
        target=loop.run_until_complete, args=(main(),), name=name, daemon=True
    )
    thread.start()
    started.wait(10)
    if failure:
        thread.join(5)
        loop.close()
        raise failure[0]
    try:
        yield service
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        loop.close()
