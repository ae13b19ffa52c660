"""mysql-proxy's log: ``2026-11-29 10:15:06: (critical) message`` lines on stderr, in a
file (reopened on SIGHUP, for logrotate) or in syslog.

GLib's levels are mapped onto Python's so every logger of the process (ours, the Lua
modules', the engine's) goes through one handler:

=========  ================  ===========
GLib       Python level       syslog
=========  ================  ===========
error      60 (chassis)      LOG_CRIT
critical   CRITICAL, ERROR   LOG_ERR
warning    WARNING           LOG_WARNING
message    25 (chassis)      LOG_NOTICE
info       INFO              LOG_INFO
debug      DEBUG             LOG_DEBUG
=========  ================  ===========

Python's ERROR is shown as "critical": mysql-proxy has no level between critical and
warning, and its default level (critical) must not hide our own errors.
"""

from __future__ import annotations

import logging
import os
import sys
import syslog
import threading
import time
from typing import TextIO

from lua_compat.modules.chassis import LEVEL_ERROR, LEVEL_MESSAGE

THRESHOLDS = {
    "error": LEVEL_ERROR,
    "critical": logging.ERROR,
    "warning": logging.WARNING,
    "message": LEVEL_MESSAGE,
    "info": logging.INFO,
    "debug": logging.DEBUG,
}

_SYSLOG_PRIORITY = {
    "error": syslog.LOG_CRIT,
    "critical": syslog.LOG_ERR,
    "warning": syslog.LOG_WARNING,
    "message": syslog.LOG_NOTICE,
    "info": syslog.LOG_INFO,
    "debug": syslog.LOG_DEBUG,
}


def level_name(levelno: int) -> str:
    if levelno >= LEVEL_ERROR:
        return "error"
    if levelno >= logging.ERROR:
        return "critical"
    if levelno >= logging.WARNING:
        return "warning"
    if levelno >= LEVEL_MESSAGE:
        return "message"
    if levelno >= logging.INFO:
        return "info"
    return "debug"


class ChassisLogHandler(logging.Handler):
    """One handler for the whole process; its target can change while it runs."""

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__(logging.DEBUG)
        self._stream = stream
        self._lock_io = threading.Lock()
        self.filename: str | None = None
        self._fd = -1
        self.use_syslog = False

    @property
    def stream(self) -> TextIO:
        return self._stream if self._stream is not None else sys.stderr

    def open_file(self, filename: str) -> None:
        """Log to `filename` (created 0660, appended to). Raises OSError."""
        fd = os.open(filename, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o660)
        with self._lock_io:
            old, self._fd = self._fd, fd
            self.filename = filename
        if old >= 0:
            os.close(old)

    def reopen(self) -> None:
        """SIGHUP: the file may have been moved away by logrotate; open the name again."""
        if self.filename is None:
            return
        try:
            self.open_file(self.filename)
        except OSError as exc:
            logging.getLogger("lua_compat").critical(
                "can't reopen log-file '%s': %s", self.filename, exc.strerror
            )

    def start_syslog(self) -> None:
        syslog.openlog("mysql-proxy", syslog.LOG_PID, syslog.LOG_DAEMON)
        self.use_syslog = True

    def close(self) -> None:
        with self._lock_io:
            fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)
        super().close()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            name = level_name(record.levelno)
            message = record.getMessage()
            if record.exc_info and self.level <= logging.DEBUG:
                message += "\n" + logging.Formatter().formatException(record.exc_info)
            if self.use_syslog:
                syslog.syslog(_SYSLOG_PRIORITY[name], message)
                return
            stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.created))
            line = f"{stamp}: ({name}) {message}\n"
            with self._lock_io:
                if self._fd >= 0:
                    try:
                        os.write(self._fd, line.encode("utf-8", "replace"))
                        return
                    except OSError:
                        pass  # disk full or similar: fall back to stderr, as 0.8.5 does
                self.stream.write(line)
                self.stream.flush()
        except Exception:
            self.handleError(record)


def install(level: str = "message", stream: TextIO | None = None) -> ChassisLogHandler:
    """Route the root logger through a fresh ChassisLogHandler at `level`."""
    handler = ChassisLogHandler(stream)
    set_level(handler, level)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    return handler


def set_level(handler: ChassisLogHandler, level: str) -> None:
    """Below the threshold, records are not even built (the root logger filters)."""
    handler.setLevel(THRESHOLDS[level])
    logging.getLogger().setLevel(THRESHOLDS[level])
