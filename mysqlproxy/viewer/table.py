"""A table that draws only the rows on screen.

The live list is rebuilt a few times a second with hundreds of rows. textual's
DataTable measures and lays out every cell of every row it is given, which at 1,000
events a second took most of the UI's time (measured: about half a second per
rebuild of 500 rows). This table takes a list of items and a function that turns
one item into cells, and calls it only for the rows it draws (Line API), so replacing
all rows costs the same whatever their number. Columns have fixed widths except one,
which takes the room left.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import events
from textual.binding import Binding, BindingType
from textual.geometry import Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

Cell = Text | str
_PADDING = 1  # cells of space on each side of a column
_MIN_FLEX = 10


@dataclass(frozen=True)
class Column:
    label: str | Text
    width: int | None  # None: the room the fixed columns leave
    justify: Literal["left", "right"] = "left"


class QueryTable(ScrollView, can_focus=True):
    """Rows of items with a cursor; enter (or a click on the cursor row) posts
    RowSelected."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "select", "Details"),
        Binding("tab", "app.focus_next", "Switch"),
        Binding("up", "move(-1)", show=False),
        Binding("down", "move(1)", show=False),
        Binding("pageup", "page(-1)", show=False),
        Binding("pagedown", "page(1)", show=False),
        Binding("home", "move_to(0)", show=False),
        Binding("end", "move_to(-1)", show=False),
    ]
    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "query-table--header",
        "query-table--odd",
        "query-table--cursor",
    }
    DEFAULT_CSS = """
    QueryTable {
        overflow-x: hidden;
        overflow-y: auto;
        background: $surface;
        & > .query-table--header { text-style: bold; background: $panel; }
        & > .query-table--odd { background: $surface-darken-1 40%; }
        & > .query-table--cursor { background: $block-cursor-blurred-background; }
        &:focus > .query-table--cursor {
            background: $block-cursor-background;
            color: $block-cursor-foreground;
            text-style: $block-cursor-text-style;
        }
    }
    """

    class RowSelected(Message):
        """Enter was pressed on a row (or its row was clicked again)."""

        def __init__(self, table: QueryTable, index: int) -> None:
            super().__init__()
            self.table = table
            self.index = index

        @property
        def control(self) -> QueryTable:
            return self.table

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.columns: list[Column] = []
        self.items: Sequence[Any] = ()
        self.cells: Callable[[Any], Sequence[Cell]] = lambda item: ()
        self.cursor_row = 0

    # --- content ------------------------------------------------------------------------

    def set_columns(self, columns: Sequence[Column]) -> None:
        self.columns = list(columns)
        self.refresh()

    def set_rows(self, items: Sequence[Any], cells: Callable[[Any], Sequence[Cell]]) -> None:
        """Show these items. The row under the cursor keeps the cursor, and its place
        on screen, when it is still there; a cursor on the first row stays on the first
        row (follows the newest)."""
        selected = self.items[self.cursor_row] if 0 < self.cursor_row < len(self.items) else None
        old_cursor = self.cursor_row
        self.items = items
        self.cells = cells
        cursor = 0
        if selected is not None:
            cursor = next((i for i, item in enumerate(items) if item is selected), 0)
        self.cursor_row = min(cursor, max(len(items) - 1, 0))
        self.virtual_size = Size(0, len(items) + 1)
        if self.cursor_row and self.cursor_row != old_cursor:
            self.scroll_to(y=self.scroll_offset.y + self.cursor_row - old_cursor, animate=False,
                           immediate=True)
        self._keep_cursor_visible()
        self.refresh()

    @property
    def row_count(self) -> int:
        return len(self.items)

    def row_text(self, index: int) -> list[str]:
        """The cells of a row as plain text (for tests)."""
        return [c.plain if isinstance(c, Text) else str(c) for c in self.cells(self.items[index])]

    def column_widths(self) -> list[int]:
        width = self.scrollable_content_region.width or self.size.width
        fixed = sum(c.width for c in self.columns if c.width is not None)
        flex = max(_MIN_FLEX, width - fixed - 2 * _PADDING * len(self.columns))
        return [c.width if c.width is not None else flex for c in self.columns]

    # --- cursor ---------------------------------------------------------------------------

    @property
    def _page(self) -> int:
        return max(1, self.scrollable_content_region.height - 1)

    def move_cursor(self, row: int) -> None:
        if not self.items:
            return
        self.cursor_row = max(0, min(row, len(self.items) - 1))
        self._keep_cursor_visible()
        self.refresh()

    def _keep_cursor_visible(self) -> None:
        top = round(self.scroll_offset.y)
        rows = self._page
        if self.cursor_row < top:
            self.scroll_to(y=self.cursor_row, animate=False, immediate=True)
        elif self.cursor_row >= top + rows:
            self.scroll_to(y=self.cursor_row - rows + 1, animate=False, immediate=True)

    def action_move(self, delta: int) -> None:
        self.move_cursor(self.cursor_row + delta)

    def action_page(self, direction: int) -> None:
        self.move_cursor(self.cursor_row + direction * self._page)

    def action_move_to(self, row: int) -> None:
        self.move_cursor(row if row >= 0 else len(self.items) - 1)

    def action_select(self) -> None:
        if 0 <= self.cursor_row < len(self.items):
            self.post_message(self.RowSelected(self, self.cursor_row))

    def on_click(self, event: events.Click) -> None:
        offset = event.get_content_offset(self)
        if offset is None or offset.y == 0:
            return
        index = round(self.scroll_offset.y) + offset.y - 1
        if not 0 <= index < len(self.items):
            return
        if index == self.cursor_row:
            self.action_select()
        else:
            self.move_cursor(index)

    # --- drawing ----------------------------------------------------------------------------

    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width or self.size.width
        widths = self.column_widths()
        if y == 0:
            style = self.get_component_rich_style("query-table--header")
            cells: Sequence[Cell] = [c.label for c in self.columns]
            return self._strip(cells, widths, width, style)
        index = round(self.scroll_offset.y) + y - 1
        base = self.rich_style
        if index >= len(self.items):
            return Strip.blank(width, base)
        if index == self.cursor_row:
            style = base + self.get_component_rich_style("query-table--cursor")
        elif index % 2:
            style = base + self.get_component_rich_style("query-table--odd")
        else:
            style = base
        return self._strip(self.cells(self.items[index]), widths, width, style)

    def _strip(self, cells: Sequence[Cell], widths: list[int], width: int,
               style: Style) -> Strip:
        line = Text(no_wrap=True, end="")
        for column, cell, cell_width in zip(self.columns, cells, widths, strict=False):
            text = cell.copy() if isinstance(cell, Text) else Text(str(cell))
            if text.cell_len > cell_width:
                text.truncate(cell_width, overflow="ellipsis")
            text.align(column.justify, cell_width)
            line.append(" " * _PADDING)
            line.append_text(text)
            line.append(" " * _PADDING)
        segments = list(line.render(self.app.console))
        strip = Strip(Segment.apply_style(segments, style)).adjust_cell_length(width, style)
        return strip
