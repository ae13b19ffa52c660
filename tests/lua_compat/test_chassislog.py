"""mysql-proxy's log lines, levels, log file reopening and syslog."""

from __future__ import annotations

import io
import logging
import os
import re
import stat
import syslog
from collections.abc import Iterator
from pathlib import Path

import pytest

from lua_compat import chassislog
from lua_compat.modules.chassis import LEVEL_ERROR, LEVEL_MESSAGE

LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d: \((\w+)\) (.*)$")


@pytest.fixture
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        root.removeHandler(h)
    for h in handlers:
        root.addHandler(h)
    root.setLevel(level)


def emit_all(logger: logging.Logger) -> None:
    logger.log(LEVEL_ERROR, "e")
    logger.critical("c")
    logger.error("python error")
    logger.warning("w")
    logger.log(LEVEL_MESSAGE, "m")
    logger.info("i")
    logger.debug("d")


@pytest.mark.parametrize(
    ("level", "shown"),
    [
        ("error", ["error e"]),
        ("critical", ["error e", "critical c", "critical python error"]),
        ("warning", ["error e", "critical c", "critical python error", "warning w"]),
        ("message", ["error e", "critical c", "critical python error", "warning w", "message m"]),
        (
            "info",
            ["error e", "critical c", "critical python error", "warning w", "message m", "info i"],
        ),
        (
            "debug",
            [
                "error e",
                "critical c",
                "critical python error",
                "warning w",
                "message m",
                "info i",
                "debug d",
            ],
        ),
    ],
)
def test_levels_and_line_format(restore_root_logger: None, level: str, shown: list[str]) -> None:
    out = io.StringIO()
    handler = chassislog.install(level, stream=out)
    emit_all(logging.getLogger("some.module"))
    handler.close()
    got = []
    for line in out.getvalue().splitlines():
        match = LINE.match(line)
        assert match, line
        got.append(f"{match.group(1)} {match.group(2)}")
    assert got == shown


def test_log_file_is_appended_and_reopened(restore_root_logger: None, tmp_path: Path) -> None:
    out = io.StringIO()
    handler = chassislog.install("message", stream=out)
    path = tmp_path / "proxy.log"
    path.write_text("old line\n")
    handler.open_file(str(path))
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # an existing file keeps its mode
    logging.getLogger("x").critical("first")
    os.rename(path, tmp_path / "proxy.log.1")
    logging.getLogger("x").critical("still the moved file")
    handler.reopen()
    logging.getLogger("x").critical("second")
    handler.close()
    moved = (tmp_path / "proxy.log.1").read_text().splitlines()
    assert moved[0] == "old line"
    assert [LINE.match(x).group(2) for x in moved[1:]] == ["first", "still the moved file"]  # type: ignore[union-attr]
    assert [LINE.match(x).group(2) for x in path.read_text().splitlines()] == ["second"]  # type: ignore[union-attr]
    assert out.getvalue() == ""


def test_new_log_file_is_not_readable_by_others(restore_root_logger: None, tmp_path: Path) -> None:
    handler = chassislog.install("message", stream=io.StringIO())
    old = os.umask(0)
    try:
        handler.open_file(str(tmp_path / "new.log"))
    finally:
        os.umask(old)
    handler.close()
    assert stat.S_IMODE((tmp_path / "new.log").stat().st_mode) == 0o660


def test_syslog_priorities(restore_root_logger: None, monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[tuple[int, str]] = []
    monkeypatch.setattr(syslog, "openlog", lambda *a: None)
    monkeypatch.setattr(syslog, "syslog", lambda prio, msg: sent.append((prio, msg)))
    out = io.StringIO()
    handler = chassislog.install("debug", stream=out)
    handler.start_syslog()
    emit_all(logging.getLogger("y"))
    assert sent == [
        (syslog.LOG_CRIT, "e"),
        (syslog.LOG_ERR, "c"),
        (syslog.LOG_ERR, "python error"),
        (syslog.LOG_WARNING, "w"),
        (syslog.LOG_NOTICE, "m"),
        (syslog.LOG_INFO, "i"),
        (syslog.LOG_DEBUG, "d"),
    ]
    assert out.getvalue() == ""
