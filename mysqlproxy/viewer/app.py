"""`mysqlproxy top`: the live terminal viewer.

The App owns no sockets. A worker (`poll_forever`) asks the data source for news in a
thread (`asyncio.to_thread`), then applies the whole batch at once on the UI side.
Both tables are QueryTables (table.py), which draw only the rows on screen, so
replacing the list costs the same whatever the number of events in the batch, and
the list is bounded: a flood of events costs a bounded amount of work a few times a
second. Commands that touch the network (start or stop a file window, EXPLAIN) run
the same way, in workers.

Screens: the main one (header, slow queries, digests), a detail screen for one query
(pretty-printed, highlighted, EXPLAIN), the help screen, and a prompt for a file
logging window.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from rich.table import Table
from rich.text import Text
from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.reactive import var
from textual.screen import ModalScreen
from textual.widgets import Footer, Input, Label, Static

from mysqlproxy import units
from mysqlproxy.viewer.data import (
    DataSource,
    Digest,
    Poll,
    ProxyState,
    SlowQuery,
    SourceUnavailable,
)
from mysqlproxy.viewer.explain import Explainer, ExplainError, explainable_text
from mysqlproxy.viewer.sql import highlighted, one_line
from mysqlproxy.viewer.table import Column, QueryTable

DEFAULT_MAX_EVENTS = 500  # rows the live list keeps
POLL_INTERVAL = 0.25  # seconds between polls
RETRY_INTERVAL = 3.0  # seconds between attempts while the proxy is unreachable
DEFAULT_LOG_MINUTES = 5
DEFAULT_LOG_FILE = "mysqlproxy-slow.log"
MAX_DETAIL_CHARS = 10_000  # longer statements are cut on the detail screen

# Durations up to each bound get this colour; beyond the last, bold red.
SEVERITY: list[tuple[int, str]] = [
    (100_000, "green"),
    (1_000_000, "yellow"),
    (10_000_000, "dark_orange"),
]


# --- formatting -------------------------------------------------------------------------


def format_us(us: float) -> str:
    """850us, 12.3ms, 1.25s, 2m03s."""
    if us < 1000:
        return f"{us:.0f}us"
    if us < 1_000_000:
        return f"{us / 1000:.1f}ms"
    if us < 60_000_000:
        return f"{us / 1e6:.2f}s"
    return units.format_duration(us / 1e6)


def severity_style(us: float) -> str:
    for bound, style in SEVERITY:
        if us < bound:
            return style
    return "bold red"


def duration_text(us: float) -> Text:
    return Text(format_us(us), style=severity_style(us), justify="right")


def format_clock(started_at: float) -> str:
    """HH:MM:SS.mmm in local time."""
    millis = int(started_at * 1000) % 1000
    return time.strftime("%H:%M:%S", time.localtime(started_at)) + f".{millis:03d}"


def format_count(value: float) -> str:
    return f"{value:,.0f}"


def _plural(count: int, word: str) -> str:
    return f"{format_count(count)} {word}{'' if count == 1 else 's'}"


@dataclass(frozen=True)
class ViewFilter:
    """What `/` asks for: `user:NAME`, `db:NAME` (or `schema:NAME`) and words, all of
    which must match (case-insensitive substrings). Words are looked for in the query,
    the user, the client and the schema."""

    users: tuple[str, ...] = ()
    schemas: tuple[str, ...] = ()
    words: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> ViewFilter:
        users: list[str] = []
        schemas: list[str] = []
        words: list[str] = []
        for part in text.split():
            name, sep, value = part.partition(":")
            if sep and value and name.lower() == "user":
                users.append(value.lower())
            elif sep and value and name.lower() in ("db", "schema"):
                schemas.append(value.lower())
            else:
                words.append(part.lower())
        return cls(tuple(users), tuple(schemas), tuple(words))

    def __bool__(self) -> bool:
        return bool(self.users or self.schemas or self.words)

    def keeps_event(self, event: SlowQuery) -> bool:
        if self.users and not any(u in event.user.lower() for u in self.users):
            return False
        if self.schemas and not any(s in event.schema.lower() for s in self.schemas):
            return False
        if self.words:
            haystack = f"{event.query}\n{event.user}@{event.client}\n{event.schema}".lower()
            return all(word in haystack for word in self.words)
        return True

    def keeps_digest(self, digest: Digest) -> bool:
        # Digests are not per user: a user: filter leaves them all.
        if self.schemas and not any(s in digest.schema.lower() for s in self.schemas):
            return False
        if self.words:
            haystack = f"{digest.fingerprint}\n{digest.example}\n{digest.schema}".lower()
            return all(word in haystack for word in self.words)
        return True


@dataclass(frozen=True)
class DigestColumn:
    key: str  # the Digest attribute, also the sort key
    label: str
    width: int | None  # None: takes the room that is left
    render: Callable[[Digest], Any]
    descending_first: bool = True


DIGEST_COLUMNS: list[DigestColumn] = [
    DigestColumn("total_us", "total", 8, lambda d: _right(format_us(d.total_us))),
    DigestColumn("count", "count", 8, lambda d: _right(format_count(d.count))),
    DigestColumn("mean_us", "mean", 8, lambda d: duration_text(d.mean_us)),
    DigestColumn("p50_us", "p50", 8, lambda d: duration_text(d.p50_us)),
    DigestColumn("p95_us", "p95", 8, lambda d: duration_text(d.p95_us)),
    DigestColumn("p99_us", "p99", 8, lambda d: duration_text(d.p99_us)),
    DigestColumn("max_us", "max", 8, lambda d: duration_text(d.max_us)),
    DigestColumn("rows_per_call", "rows/call", 9, lambda d: _right(f"{d.rows_per_call:,.1f}")),
    DigestColumn("errors", "errors", 6, lambda d: _right(
        format_count(d.errors), "red" if d.errors else "")),
    DigestColumn("fingerprint", "fingerprint", None, lambda d: d.fingerprint,
                 descending_first=False),
]
# The order `s` cycles through (the table shows fingerprint first).
DIGEST_DISPLAY_ORDER = ["fingerprint", "count", "total_us", "mean_us", "p50_us", "p95_us",
                        "p99_us", "max_us", "rows_per_call", "errors"]
_DIGEST_BY_KEY = {c.key: c for c in DIGEST_COLUMNS}


def _right(text: str, style: str = "") -> Text:
    return Text(text, style=style, justify="right")


def sort_digests(digests: list[Digest], key: str, descending: bool) -> list[Digest]:
    if key == "fingerprint":
        return sorted(digests, key=lambda d: d.fingerprint.lower(), reverse=descending)
    return sorted(digests, key=lambda d: (getattr(d, key), d.fingerprint), reverse=descending)


# The events table; the query takes the room left.
EVENT_COLUMNS: list[Column] = [
    Column("time", 12),
    Column("duration", 8, "right"),
    Column("user@client", 22),
    Column("schema", 12),
    Column("rows", 8, "right"),
    Column("query", None),
]
_LONGEST_CELL = 1000  # characters of a query a cell ever needs


def event_cells(event: SlowQuery) -> tuple[Any, ...]:
    if event.error_code:
        rows = Text(f"ERR {event.error_code}", style="bold red")
    else:
        rows = Text(format_count(event.rows))
    host = event.client.rsplit(":", 1)[0] if event.client else "-"
    return (
        format_clock(event.started_at),
        duration_text(event.duration_us),
        f"{event.user or '-'}@{host}",
        event.schema or "-",
        rows,
        one_line(event.query[:_LONGEST_CELL]),
    )


def digest_cells(digest: Digest) -> list[Any]:
    cells: list[Any] = []
    for key in DIGEST_DISPLAY_ORDER:
        value = _DIGEST_BY_KEY[key].render(digest)
        cells.append(one_line(value[:_LONGEST_CELL]) if isinstance(value, str) else value)
    return cells


def format_threshold(us: int) -> str:
    """50ms, 1.5s, 250us: as an operator would type it."""
    if us % 1_000_000 == 0 and us:
        return f"{us // 1_000_000}s"
    if us % 1000 == 0:
        return f"{us // 1000}ms"
    return f"{us}us"


# --- the app ----------------------------------------------------------------------------


class TopApp(App[None]):
    """Slow queries as they happen, digests, and the proxy's state."""

    TITLE = "mysqlproxy top"
    ENABLE_COMMAND_PALETTE = False
    CSS = """
    #header { height: 2; padding: 0 1; background: $panel; }
    #banner { height: auto; padding: 0 1; background: $error 60%; color: $text; display: none; }
    #banner.shown { display: block; }
    QueryTable { border: round $panel-lighten-2; }
    QueryTable:focus { border: round $accent; }
    #events { height: 3fr; }
    #digests { height: 2fr; }
    #filter { dock: bottom; display: none; }
    #filter.shown { display: block; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "Quit"),
        Binding("ctrl+c", "quit", show=False, priority=True),
        Binding("p", "toggle_pause", "Pause"),
        Binding("slash", "filter", "Filter"),
        Binding("s", "sort_next", "Sort"),
        Binding("S,shift+s", "sort_reverse", "Reverse"),
        Binding("l", "log_start", "Log to file"),
        Binding("L,shift+l", "log_stop", "Stop file log"),
        Binding("question_mark", "help", "Help"),
        Binding("escape", "escape", show=False),
    ]

    paused: var[bool] = var(False)
    filter_text: var[str] = var("")
    sort_key: var[str] = var("total_us")
    sort_descending: var[bool] = var(True)

    def __init__(
        self,
        source: DataSource,
        *,
        explainer: Explainer | None = None,
        max_events: int = DEFAULT_MAX_EVENTS,
        poll_interval: float = POLL_INTERVAL,
        retry_interval: float = RETRY_INTERVAL,
        autostart: bool = True,
        default_log_path: str | None = None,
    ) -> None:
        super().__init__()
        self.source = source
        self.explainer = explainer
        self.poll_interval = poll_interval
        self.retry_interval = retry_interval
        self.autostart = autostart
        self.default_log_path = default_log_path or os.path.abspath(DEFAULT_LOG_FILE)
        self.events: deque[SlowQuery] = deque(maxlen=max_events)
        self.digests: list[Digest] = []
        self.proxy: ProxyState | None = None
        self.dropped = 0
        self.unseen = 0  # events that arrived while paused
        self.problem = ""  # the source's error, while it lasts
        self.attempt = 0
        self.polls_applied = 0
        self.events_received = 0
        self.file_log_path: str | None = None  # the file window started from here
        # What the tables show, row by row (frozen while paused).
        self.shown_events: list[SlowQuery] = []
        self.shown_digests: list[Digest] = []
        self._snapshot_events: list[SlowQuery] = []
        self._snapshot_digests: list[Digest] = []
        self._drawn = False  # reactive watchers wait for the widgets

    # --- layout -------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        # Kept as attributes: app.query_one() searches the screen on top, which may be
        # the detail screen when a poll arrives.
        self.header = Static(id="header")
        self.banner = Static(id="banner")
        self.events_table = QueryTable(id="events")
        self.digests_table = QueryTable(id="digests")
        self.filter_input = Input(placeholder="filter: words, user:NAME, db:NAME   (enter "
                                  "applies, escape cancels, empty clears)", id="filter")
        yield self.header
        yield self.banner
        yield self.events_table
        yield self.digests_table
        yield self.filter_input
        yield Footer()

    def on_mount(self) -> None:
        self._drawn = True
        self.events_table.set_columns(EVENT_COLUMNS)
        self.refresh_header()
        self.refresh_events()
        self.refresh_digests()
        self.events_table.focus()
        if self.autostart:
            self.poll_forever()

    # --- polling ------------------------------------------------------------------

    @work(exclusive=True, group="poll")
    async def poll_forever(self) -> None:
        """Poll in a thread, apply on the UI side, sleep; retry while the proxy is away."""
        while True:
            try:
                poll = await asyncio.to_thread(self.source.poll)
            except SourceUnavailable as exc:
                self.source_failed(str(exc))
                await asyncio.sleep(self.retry_interval)
                continue
            self.apply_poll(poll)
            await asyncio.sleep(self.poll_interval)

    def source_failed(self, message: str) -> None:
        self.attempt += 1
        self.problem = message
        banner = self.banner
        text = Text("⚠ ", style="bold")
        text.append(message, style="bold")
        text.append(f"  ·  retrying every {self.retry_interval:g}s (attempt {self.attempt})")
        if self.polls_applied:
            text.append("  ·  showing the last data received")
        banner.update(text)
        banner.add_class("shown")

    def apply_poll(self, poll: Poll) -> None:
        """One batch: everything it changed is redrawn once."""
        first = self.polls_applied == 0
        if self.problem:
            self.problem = ""
            self.attempt = 0
            self.banner.remove_class("shown")
            if not first:
                self.notify(f"connected to {self.source.where} again; window renewed")
        self.polls_applied += 1
        if poll.events:
            self.events.extend(poll.events)
            self.events_received += len(poll.events)
            if self.paused:
                self.unseen += len(poll.events)
        self.dropped += poll.dropped
        if poll.digests is not None:
            self.digests = poll.digests
        if poll.proxy is not None:
            self.proxy = poll.proxy
        if not self.paused:
            if poll.events or first:
                self.refresh_events()
            if poll.digests is not None:
                self.refresh_digests()
        elif poll.events:
            self._update_events_title()
        if first or poll.proxy is not None or poll.dropped:
            self.refresh_header()

    # --- drawing ------------------------------------------------------------------

    @property
    def view_filter(self) -> ViewFilter:
        return ViewFilter.parse(self.filter_text)

    def refresh_header(self) -> None:
        header = Text(no_wrap=True, overflow="ellipsis")
        proxy = self.proxy
        if proxy is None:
            header.append(f"mysqlproxy top: connecting to {self.source.where}…", style="bold")
        else:
            header.append("mysqlproxy", style="bold")
            if proxy.version:
                header.append(f" {proxy.version}")
            header.append("  backend ", style="dim")
            header.append(proxy.backend or "?", style="bold")
            header.append("  connections ", style="dim")
            header.append(format_count(proxy.connections), style="bold")
            header.append("  q/s ", style="dim")
            header.append("-" if proxy.qps is None else format_count(proxy.qps), style="bold")
        header.append("  slow ≥ ", style="dim")
        header.append(format_threshold(self.source.threshold_us), style="bold")
        header.append("  dropped ", style="dim")
        header.append(format_count(self.dropped), style="bold red" if self.dropped else "bold")
        if self.paused:
            header.append("  PAUSED", style="bold reverse yellow")
        if self.filter_text:
            header.append("  filter ", style="dim")
            header.append(self.filter_text, style="bold cyan")
        header.append("\n")
        header.append("windows ", style="dim")
        windows = proxy.windows if proxy is not None else ()
        if not windows:
            header.append("none open" if proxy is not None else "-", style="dim")
        for index, window in enumerate(windows):
            if index:
                header.append("  ·  ", style="dim")
            header.append(window.target, style="bold" if window.format != "ring" else "")
            if window.target == self.source.window_target:
                header.append(" (this viewer)", style="dim")
            header.append(f" {units.format_duration(window.remaining_seconds)}",
                          style="bold green")
            if window.sink_health != "ok":
                header.append(f" {window.sink_health}", style="bold red")
            elif window.events_dropped:
                header.append(f" {window.events_dropped} dropped", style="red")
        self.header.update(header)

    def _update_events_title(self, matching: int | None = None) -> None:
        table = self.events_table
        title = f"slow queries ≥ {format_threshold(self.source.threshold_us)}, newest first"
        shown = len(self._snapshot_events)
        if matching is not None and self.filter_text:
            title += f" · {matching} of {shown} match"
        else:
            title += f" · {shown}"
        if self.paused:
            title += f" · PAUSED, {self.unseen} new"
        table.border_title = title

    def refresh_events(self) -> None:
        """Rebuild the list from the newest events (once per batch, bounded)."""
        table = self.events_table
        if not self.paused:
            self._snapshot_events = list(reversed(self.events))
        view = self.view_filter
        rows = [e for e in self._snapshot_events if view.keeps_event(e)] if view else list(
            self._snapshot_events)
        table.set_rows(rows, event_cells)
        self.shown_events = rows
        self._update_events_title(len(rows))

    def refresh_digests(self) -> None:
        table = self.digests_table
        if not self.paused:
            self._snapshot_digests = list(self.digests)
        view = self.view_filter
        rows = [d for d in self._snapshot_digests if view.keeps_digest(d)] if view else list(
            self._snapshot_digests)
        rows = sort_digests(rows, self.sort_key, self.sort_descending)
        arrow = " ▼" if self.sort_descending else " ▲"
        columns = []
        for key in DIGEST_DISPLAY_ORDER:
            column = _DIGEST_BY_KEY[key]
            label = Text(column.label + (arrow if key == self.sort_key else ""),
                         style="bold underline" if key == self.sort_key else "")
            columns.append(Column(label, column.width,
                                  "left" if column.width is None else "right"))
        table.set_columns(columns)
        table.set_rows(rows, digest_cells)
        self.shown_digests = rows
        sort_label = _DIGEST_BY_KEY[self.sort_key].label
        order = "descending" if self.sort_descending else "ascending"
        title = f"digests, last 5 min · {len(rows)} classes · by {sort_label} {order}"
        if self.paused:
            title += " · PAUSED"
        table.border_title = title

    # --- reactive state -------------------------------------------------------------

    def watch_paused(self, paused: bool) -> None:
        if not self._drawn:
            return
        if not paused:
            self.unseen = 0
        self.refresh_events()
        self.refresh_digests()
        self.refresh_header()

    def watch_filter_text(self) -> None:
        if not self._drawn:
            return
        self.refresh_events()
        self.refresh_digests()
        self.refresh_header()

    def watch_sort_key(self) -> None:
        if self._drawn:
            self.refresh_digests()

    def watch_sort_descending(self) -> None:
        if self._drawn:
            self.refresh_digests()

    # --- actions ----------------------------------------------------------------------

    def action_toggle_pause(self) -> None:
        self.paused = not self.paused

    def action_filter(self) -> None:
        field = self.filter_input
        field.value = self.filter_text
        field.add_class("shown")
        field.focus()

    @on(Input.Submitted, "#filter")
    def filter_submitted(self, event: Input.Submitted) -> None:
        self.filter_text = event.value.strip()
        self._close_filter()

    def _close_filter(self) -> None:
        self.filter_input.remove_class("shown")
        self.events_table.focus()

    def action_escape(self) -> None:
        field = self.filter_input
        if field.has_class("shown"):
            self._close_filter()
        elif self.filter_text:
            self.filter_text = ""

    def action_sort_next(self) -> None:
        index = DIGEST_DISPLAY_ORDER.index(self.sort_key)
        key = DIGEST_DISPLAY_ORDER[(index + 1) % len(DIGEST_DISPLAY_ORDER)]
        self.sort_descending = _DIGEST_BY_KEY[key].descending_first
        self.sort_key = key

    def action_sort_reverse(self) -> None:
        self.sort_descending = not self.sort_descending

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def action_log_start(self) -> None:
        self.push_screen(
            LogPrompt(self.file_log_path or self.default_log_path, self.source.threshold_us),
            self._log_prompt_done,
        )

    def _log_prompt_done(self, answer: tuple[float, str] | None) -> None:
        if answer is not None:
            minutes, path = answer
            self.start_file_log(minutes, path)

    @work(group="command")
    async def start_file_log(self, minutes: float, path: str) -> None:
        try:
            message = await asyncio.to_thread(
                self.source.start_file_log, path, minutes, self.source.threshold_us
            )
        except SourceUnavailable as exc:
            self.notify(str(exc), title="file logging not started", severity="error")
            return
        self.file_log_path = path
        self.notify(message or f"logging to {path}", title="file logging")

    def action_log_stop(self) -> None:
        path = self.file_log_path
        if path is None and self.proxy is not None:
            files = [w.target for w in self.proxy.windows
                     if w.format != "ring" and w.target != "stdout"]
            if len(files) == 1:
                path = files[0]
        if path is None:
            self.notify("no file logging window to stop (l starts one)", severity="warning")
            return
        self.stop_file_log(path)

    @work(group="command")
    async def stop_file_log(self, path: str) -> None:
        try:
            message = await asyncio.to_thread(self.source.stop_file_log, path)
        except SourceUnavailable as exc:
            self.notify(str(exc), title="file logging not stopped", severity="error")
            return
        if path == self.file_log_path:
            self.file_log_path = None
        self.notify(message or f"stopped logging to {path}", title="file logging")

    @on(QueryTable.RowSelected)
    def row_selected(self, event: QueryTable.RowSelected) -> None:
        index = event.index
        if event.table.id == "events" and 0 <= index < len(self.shown_events):
            self.push_screen(QueryScreen.for_event(self.shown_events[index], self.explainer))
        elif event.table.id == "digests" and 0 <= index < len(self.shown_digests):
            self.push_screen(QueryScreen.for_digest(self.shown_digests[index], self.explainer))


# --- the detail screen ------------------------------------------------------------------


class QueryScreen(ModalScreen[None]):
    """One query in full: what it cost, its text laid out and highlighted, its plan."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close", "Back"),
        Binding("q", "close", "Back"),
        Binding("e", "explain", "EXPLAIN again"),
    ]
    CSS = """
    QueryScreen { background: $background; }
    QueryScreen #facts { padding: 0 1; background: $panel; height: auto; }
    QueryScreen #sql { padding: 1 2; }
    QueryScreen #explain { padding: 0 2 1 2; }
    """

    def __init__(self, title: str, facts: list[tuple[str, Text | str]], query: str,
                 schema: str, explainer: Explainer | None) -> None:
        super().__init__()
        self.title_text = title
        self.facts = facts
        self.query_text = query
        self.schema = schema
        self.explainer = explainer

    @classmethod
    def for_event(cls, event: SlowQuery, explainer: Explainer | None) -> QueryScreen:
        outcome: Text
        if event.error_code:
            outcome = Text(f"error {event.error_code} ({event.sql_state}): "
                           f"{event.error_message}", style="bold red")
        else:
            outcome = Text(f"{_plural(event.rows_sent, 'row')} sent, "
                           f"{format_count(event.rows_affected)} affected")
            if event.warnings:
                outcome.append(f", {_plural(event.warnings, 'warning')}", style="yellow")
        flags = [name for name, on_ in (("prepared", event.prepared),
                                        ("no index used", event.no_index_used),
                                        ("in transaction", event.in_transaction)) if on_]
        facts: list[tuple[str, Text | str]] = [
            ("started", time.strftime("%Y-%m-%d ", time.localtime(event.started_at))
             + format_clock(event.started_at)),
            ("duration", Text.assemble(duration_text(event.duration_us),
                                       f"  (first byte after {format_us(event.first_byte_us)})")),
            ("who", f"{event.user or '-'}@{event.client}  connection #{event.connection_id}, "
                    f"server thread {event.thread_id}"),
            ("schema", event.schema or "-"),
            ("outcome", outcome),
            ("bytes", f"{format_count(event.bytes_received)} in, "
                      f"{format_count(event.bytes_sent)} out"),
        ]
        if flags:
            facts.append(("flags", ", ".join(flags)))
        return cls(f"{event.command} #{event.id}", facts, event.query, event.schema, explainer)

    @classmethod
    def for_digest(cls, digest: Digest, explainer: Explainer | None) -> QueryScreen:
        facts: list[tuple[str, Text | str]] = [
            ("fingerprint", digest.fingerprint),
            ("query id", digest.query_id),
            ("count", f"{_plural(digest.count, 'call')}, {_plural(digest.errors, 'error')}, "
                      f"{digest.rows_per_call:,.1f} rows per call"),
            ("time", Text.assemble(
                "total ", format_us(digest.total_us), "  mean ", duration_text(digest.mean_us),
                "  p50 ", duration_text(digest.p50_us), "  p95 ", duration_text(digest.p95_us),
                "  p99 ", duration_text(digest.p99_us), "  max ", duration_text(digest.max_us))),
            ("schema", digest.schema or "-"),
        ]
        return cls("digest (an example of the class below)", facts, digest.example,
                   digest.schema, explainer)

    def compose(self) -> ComposeResult:
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="dim", no_wrap=True)
        grid.add_column()
        grid.add_row("", Text(self.title_text, style="bold"))
        for name, value in self.facts:
            grid.add_row(name, value)
        if len(self.query_text) > MAX_DETAIL_CHARS:
            grid.add_row("text", Text(f"the first {MAX_DETAIL_CHARS:,} of "
                                      f"{len(self.query_text):,} characters", style="yellow"))
        yield Static(grid, id="facts")
        # Laying out and highlighting a 1 MB INSERT would freeze the screen.
        shown = self.query_text[:MAX_DETAIL_CHARS]
        with VerticalScroll():
            yield Static(highlighted(shown), id="sql")
            yield Static(id="explain")
        yield Footer()

    def on_mount(self) -> None:
        self.action_explain()

    def action_close(self) -> None:
        self.dismiss()

    def action_explain(self) -> None:
        box = self.query_one("#explain", Static)
        if self.explainer is None:
            box.update(Text("EXPLAIN: start the viewer with --db-dsn mysql://user:password@"
                            "host:port to see the plan", style="dim"))
        elif explainable_text(self.query_text) is None:
            box.update(Text("EXPLAIN: only SELECT statements are explained", style="dim"))
        else:
            box.update(Text(f"EXPLAIN via {self.explainer.dsn}…", style="dim"))
            self.run_explain()

    @work(exclusive=True, group="explain")
    async def run_explain(self) -> None:
        assert self.explainer is not None
        box = self.query_one("#explain", Static)
        try:
            plan = await asyncio.to_thread(self.explainer.explain, self.query_text, self.schema)
        except ExplainError as exc:
            box.update(Text(str(exc), style="red"))
            return
        table = Table(title=f"EXPLAIN (in {self.schema or 'no schema'})", title_justify="left",
                      expand=False)
        for column in plan.columns:
            table.add_column(column)
        for row in plan.rows:
            table.add_row(*row)
        box.update(table)


# --- help and the prompt -----------------------------------------------------------------

KEYS: list[tuple[str, str]] = [
    ("p", "pause or resume the lists (the header stays live)"),
    ("/", "filter: words, user:NAME, db:NAME; empty or escape clears"),
    ("enter", "the selected query in full, with EXPLAIN when --db-dsn is given"),
    ("s / S", "sort the digests by the next column / reverse the order"),
    ("l", "log to a file for N minutes (asks for minutes and path)"),
    ("L", "stop that file logging window"),
    ("tab", "switch between slow queries and digests"),
    ("?", "this help"),
    ("q", "quit (the viewer's window closes; if the viewer dies it expires in 30 s)"),
]


class HelpScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close", "Back"),
        Binding("q", "close", "Back"),
        Binding("question_mark", "close", "Back"),
    ]
    CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > Static { width: auto; max-width: 90%; padding: 1 2; border: round $accent;
                          background: $panel; }
    """

    def compose(self) -> ComposeResult:
        table = Table.grid(padding=(0, 3))
        table.add_column(style="bold cyan", no_wrap=True)
        table.add_column()
        for key, what in KEYS:
            table.add_row(key, what)
        body = Table.grid()
        body.add_row(Text("mysqlproxy top: keys", style="bold"))
        body.add_row("")
        body.add_row(table)
        body.add_row("")
        body.add_row(Text("Durations: green < 100ms, yellow < 1s, orange < 10s, red beyond. "
                          "'dropped' counts events the proxy's ring lost before the viewer "
                          "read them.", style="dim"))
        yield Static(body)

    def action_close(self) -> None:
        self.dismiss()


class LogPrompt(ModalScreen[tuple[float, str] | None]):
    """Minutes and path of a file logging window."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]
    CSS = """
    LogPrompt { align: center middle; }
    LogPrompt > Vertical { width: 80; height: auto; padding: 1 2; border: round $accent;
                           background: $panel; }
    LogPrompt Input { margin: 0 0 1 0; }
    LogPrompt #error { color: $error; }
    """

    def __init__(self, default_path: str, threshold_us: int) -> None:
        super().__init__()
        self.default_path = default_path
        self.threshold_us = threshold_us

    def compose(self) -> ComposeResult:
        with Vertical():
            threshold = format_threshold(self.threshold_us)
            yield Label(f"Log statements slower than {threshold} to a file (slow log format)")
            yield Label("minutes:")
            yield Input(str(DEFAULT_LOG_MINUTES), id="minutes")
            yield Label("file on the proxy's host:")
            yield Input(self.default_path, id="path")
            yield Label("enter confirms, escape cancels", id="error")

    def on_mount(self) -> None:
        self.query_one("#minutes", Input).focus()

    @on(Input.Submitted, "#minutes")
    def minutes_given(self) -> None:
        self.query_one("#path", Input).focus()

    @on(Input.Submitted, "#path")
    def path_given(self) -> None:
        minutes_text = self.query_one("#minutes", Input).value.strip()
        path = self.query_one("#path", Input).value.strip()
        try:
            minutes = float(minutes_text)
        except ValueError:
            minutes = 0.0
        if not 0 < minutes <= 7 * 24 * 60:
            self._error(f"minutes must be a number above 0, not {minutes_text!r}")
            self.query_one("#minutes", Input).focus()
            return
        if not path:
            self._error("the file path is empty")
            return
        self.dismiss((minutes, os.path.abspath(path)))

    def _error(self, message: str) -> None:
        self.query_one("#error", Label).update(message)

    def action_cancel(self) -> None:
        self.dismiss(None)


def run_until_quit(app: App[Any]) -> int | None:
    """Run the app in the foreground until the user quits, or SIGTERM, SIGHUP or SIGINT
    arrives: a signal makes the app exit as `q` would (giving the terminal back and
    letting the caller close its window on the proxy) instead of killing the process
    mid-screen. Returns the signal that ended it, or None for a quit from the keyboard."""
    import contextlib
    import signal
    import threading

    received: list[int] = []

    def quit_app() -> None:
        # From a thread: the app may not be running yet, and call_from_thread must not
        # be called from the app's own thread (where signal handlers run).
        deadline = time.monotonic() + 30
        while not app.is_running and time.monotonic() < deadline and not app.return_code:
            time.sleep(0.05)
        with contextlib.suppress(RuntimeError):
            app.call_from_thread(app.exit)

    def on_signal(signum: int, frame: object) -> None:
        if not received:
            threading.Thread(target=quit_app, name="quit-viewer", daemon=True).start()
        received.append(signum)

    handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {signum: signal.signal(signum, on_signal) for signum in handled}
    try:
        app.run()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return received[0] if received else None
