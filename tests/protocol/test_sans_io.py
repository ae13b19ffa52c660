"""The protocol package is sans-io: importing any of it pulls in no event loop and no
sockets. Checked in a fresh interpreter, where sys.modules shows every import."""

from __future__ import annotations

import json
import pathlib
import pkgutil
import subprocess
import sys

import mysqlproxy.protocol

FORBIDDEN = ("asyncio", "socket", "selectors", "ssl", "uvloop")
ROOT = pathlib.Path(__file__).parents[2]


def _modules_after_import(modules: list[str]) -> list[str]:
    """Import `modules` in a fresh interpreter (no site-packages, so nothing a .pth file
    imports interferes) and return which FORBIDDEN modules are loaded."""
    code = (
        "import importlib, json, sys\n"
        f"before = [m for m in {FORBIDDEN!r} if m in sys.modules]\n"
        "assert not before, before\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        f"print(json.dumps([m for m in {FORBIDDEN!r} if m in sys.modules]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-S", "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    loaded: list[str] = json.loads(out.stdout)
    return loaded


def protocol_modules() -> list[str]:
    names = [
        info.name
        for info in pkgutil.iter_modules(mysqlproxy.protocol.__path__, "mysqlproxy.protocol.")
    ]
    return sorted(names)


def test_every_protocol_module_is_found() -> None:
    names = protocol_modules()
    for expected in ("constants", "wire", "packets", "messages", "events", "errors", "tracker"):
        assert f"mysqlproxy.protocol.{expected}" in names


def test_protocol_imports_neither_asyncio_nor_socket() -> None:
    assert _modules_after_import(["mysqlproxy.protocol", *protocol_modules()]) == []


def test_the_check_sees_an_asyncio_import() -> None:
    # The same check on a module that does use asyncio: it must notice.
    loaded = _modules_after_import(["mysqlproxy.protocol.tracker", "asyncio"])
    assert "asyncio" in loaded
    assert "socket" in loaded
