"""SQL for people: one line for the live list, pretty-printed and highlighted for the
detail screen.

The pretty-printer is a small tokenizer plus layout rules, not a parser: it never
changes what is inside strings, quoted names or comments, and anything it does not
recognise is kept as written. Good enough for reading a slow query; the text that
EXPLAIN runs is always the original.
"""

from __future__ import annotations

import re

from rich.syntax import Syntax

_TOKEN = re.compile(
    r"""
      (?P<space>\s+)
    | (?P<comment>/\*.*?(?:\*/|$)|--[ \t][^\n]*|\#[^\n]*)
    | (?P<string>'(?:[^'\\]|\\.|'')*(?:'|$)|"(?:[^"\\]|\\.|"")*(?:"|$)|`(?:[^`]|``)*(?:`|$))
    | (?P<number>0x[0-9A-Fa-f]+|\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+)
    | (?P<word>[A-Za-z_@][A-Za-z0-9_$@]*)
    | (?P<op>->>|<=>|->|>=|<=|<>|!=|:=|\|\||&&)
    | (?P<other>.)
    """,
    re.X | re.S,
)

# Clauses that start a new line at the current depth.
_CLAUSES = {
    "SELECT", "FROM", "WHERE", "GROUP BY", "ORDER BY", "HAVING", "LIMIT", "OFFSET",
    "UNION", "UNION ALL", "INSERT INTO", "REPLACE INTO", "VALUES", "UPDATE", "SET",
    "DELETE FROM", "ON DUPLICATE KEY UPDATE", "WITH", "WINDOW", "RETURNING", "FOR UPDATE",
}
# Joins start a new line one step in.
_JOINS = {
    "JOIN", "INNER JOIN", "LEFT JOIN", "RIGHT JOIN", "CROSS JOIN", "STRAIGHT_JOIN",
    "LEFT OUTER JOIN", "RIGHT OUTER JOIN", "NATURAL JOIN",
}
_KEYWORDS = {
    "ALL", "AND", "AS", "ASC", "BETWEEN", "BY", "CASE", "CROSS", "DELETE", "DESC",
    "DISTINCT", "DUPLICATE", "ELSE", "END", "EXISTS", "FOR", "FROM", "GROUP", "HAVING",
    "IN", "INNER", "INSERT", "INTO", "IS", "JOIN", "KEY", "LEFT", "LIKE", "LIMIT",
    "NATURAL", "NOT", "NULL", "OFFSET", "ON", "OR", "ORDER", "OUTER", "REPLACE",
    "RETURNING", "RIGHT", "SELECT", "SET", "STRAIGHT_JOIN", "THEN", "UNION", "UPDATE",
    "USING", "VALUES", "WHEN", "WHERE", "WINDOW", "WITH", "XOR",
}
_LONGEST_PHRASE = 4  # words in "ON DUPLICATE KEY UPDATE"
INDENT = "    "
SHORT = 60  # a statement this short stays on one line


def one_line(query: str, width: int | None = None) -> str:
    """Whitespace runs become one space; cut to `width` characters with an ellipsis."""
    text = " ".join(query.split())
    if width is not None and len(text) > width:
        return text[: max(width - 1, 0)] + "…"
    return text


def _tokens(query: str) -> list[tuple[str, str]]:
    return [(m.lastgroup or "other", m.group()) for m in _TOKEN.finditer(query)]


def pretty(query: str) -> str:
    """The statement laid out one clause a line, subqueries indented, long select
    lists one item a line, AND/OR of a WHERE on lines of their own, keywords
    upper-cased."""
    compact = one_line(query)
    if len(compact) <= SHORT:
        return _upper_keywords(compact)
    tokens: list[tuple[str, str, bool]] = []  # kind, text, whitespace before it
    spaced = False
    for kind, text in _tokens(query):
        if kind == "space":
            spaced = True
            continue
        tokens.append((kind, text, spaced))
        spaced = False
    lines: list[str] = []
    current: list[str] = []
    depth = 0
    # For each open parenthesis: did it open a subquery (indented on new lines)?
    parens: list[bool] = []
    clause = ""
    listing = False  # the current clause lists items one a line
    between = False  # the next AND belongs to BETWEEN ... AND

    def newline(extra: int = 0) -> None:
        if "".join(current).strip():
            lines.append("".join(current).rstrip())
        current.clear()
        current.append(INDENT * (depth + extra))

    def add(text: str, glue: bool = False) -> None:
        last = current[-1] if current else ""
        if last.strip() and not glue and not last.endswith(("(", ".")) and text not in (
            ",", ")", "."
        ):
            current.append(" ")
        current.append(text)

    newline()
    i = 0
    while i < len(tokens):
        kind, text, space_before = tokens[i]
        next_text = tokens[i + 1][1] if i + 1 < len(tokens) else ""
        next_glued = i + 1 < len(tokens) and not tokens[i + 1][2]
        call = next_text == "(" and next_glued  # NOW(), VALUES(b): a function
        if kind == "word" and not call:
            phrase, used = _phrase([(k, t) for k, t, _ in tokens], i)
            if phrase in _CLAUSES:
                newline()
                add(phrase)
                clause = phrase
                i += used
                listing = phrase in _LISTS and _has_list(tokens, i)
                if listing:
                    newline(1)
                continue
            if phrase in _JOINS:
                newline(1)
                add(phrase)
                i += used
                continue
            if text.upper() == "BETWEEN":
                between = True
            elif text.upper() == "AND" and between:
                between = False
            elif text.upper() in ("AND", "OR", "XOR") and clause in ("WHERE", "HAVING") and (
                not parens or parens[-1]
            ):
                newline(1)
                add(text.upper())
                i += 1
                continue
            add(text.upper() if text.upper() in _KEYWORDS else text)
        elif kind == "word":
            add(text.upper() if text.upper() in _KEYWORDS else text)
        elif text == "(":
            subquery = next_text.upper() in ("SELECT", "WITH")
            previous = tokens[i - 1] if i else None
            glue = previous is not None and previous[0] in ("word", "string") and not space_before
            add("(", glue=glue)
            parens.append(subquery)
            if subquery:
                depth += 1
        elif text == ")":
            subquery = parens.pop() if parens else False
            if subquery:
                depth -= 1
                newline()
            add(")")
        elif text == ",":
            current.append(",")
            if listing and (not parens or parens[-1]):
                newline(1)
        elif kind == "comment" and text.startswith(("--", "#")):
            add(text)
            newline()
        elif text == "." or (i and tokens[i - 1][1] == "." and not space_before):
            add(text, glue=True)
        else:
            add(text)
        i += 1
    newline()
    return "\n".join(lines)


_LISTS = ("SELECT", "SET", "GROUP BY", "ORDER BY")


def _has_list(tokens: list[tuple[str, str, bool]], start: int) -> bool:
    """Does the clause starting at `start` list several items (a comma outside
    parentheses before the next clause)?"""
    level = 0
    for index in range(start, len(tokens)):
        kind, text, _ = tokens[index]
        if text == "(":
            level += 1
        elif text == ")":
            level -= 1
            if level < 0:
                return False
        elif level == 0 and text == ",":
            return True
        elif level == 0 and kind == "word" and text.upper() in _CLAUSE_STARTS:
            return False
    return False


_CLAUSE_STARTS = {phrase.split()[0] for phrase in _CLAUSES}


def _phrase(tokens: list[tuple[str, str]], start: int) -> tuple[str, int]:
    """The longest clause or join phrase starting at `start`, and how many tokens it
    takes; else the single word."""
    words: list[str] = []
    for kind, text in tokens[start : start + _LONGEST_PHRASE]:
        if kind != "word":
            break
        words.append(text.upper())
    for n in range(len(words), 0, -1):
        phrase = " ".join(words[:n])
        if phrase in _CLAUSES or phrase in _JOINS:
            return phrase, n
    return tokens[start][1], 1


def _upper_keywords(text: str) -> str:
    return "".join(
        value.upper() if kind == "word" and value.upper() in _KEYWORDS else value
        for kind, value in _tokens(text)
    )


def highlighted(query: str, *, theme: str = "ansi_dark") -> Syntax:
    """The pretty-printed statement with SQL highlighting, wrapped to the screen."""
    return Syntax(pretty(query), "sql", theme=theme, word_wrap=True, background_color="default")
