"""mysql.tokenizer: the lexer of mysql-proxy 0.8's tokenizer module, in Python.

Written from the specification in ../shared/reference/mysql-proxy-lua-api.md (8.3 and
Appendix A). ``tokenize`` returns ``(token_id, text)`` pairs; the Lua side (runtime.py)
wraps them in token userdata.
"""

from __future__ import annotations

import re

TOKEN_NAMES: tuple[str, ...] = (
    "TK_UNKNOWN",
    "TK_LE",
    "TK_GE",
    "TK_LT",
    "TK_GT",
    "TK_EQ",
    "TK_NE",
    "TK_STRING",
    "TK_COMMENT",
    "TK_LITERAL",
    "TK_FUNCTION",
    "TK_INTEGER",
    "TK_FLOAT",
    "TK_DOT",
    "TK_COMMA",
    "TK_ASSIGN",
    "TK_OBRACE",
    "TK_CBRACE",
    "TK_SEMICOLON",
    "TK_STAR",
    "TK_PLUS",
    "TK_MINUS",
    "TK_DIV",
    "TK_BITWISE_AND",
    "TK_BITWISE_OR",
    "TK_BITWISE_XOR",
    "TK_LOGICAL_AND",
    "TK_LOGICAL_OR",
    "TK_SQL_ACCESSIBLE",
    "TK_SQL_ACTION",
    "TK_SQL_ADD",
    "TK_SQL_ALL",
    "TK_SQL_ALTER",
    "TK_SQL_ANALYZE",
    "TK_SQL_AND",
    "TK_SQL_AS",
    "TK_SQL_ASC",
    "TK_SQL_ASENSITIVE",
    "TK_SQL_BEFORE",
    "TK_SQL_BETWEEN",
    "TK_SQL_BIGINT",
    "TK_SQL_BINARY",
    "TK_SQL_BIT",
    "TK_SQL_BLOB",
    "TK_SQL_BOTH",
    "TK_SQL_BY",
    "TK_SQL_CALL",
    "TK_SQL_CASCADE",
    "TK_SQL_CASE",
    "TK_SQL_CHANGE",
    "TK_SQL_CHAR",
    "TK_SQL_CHARACTER",
    "TK_SQL_CHECK",
    "TK_SQL_COLLATE",
    "TK_SQL_COLUMN",
    "TK_SQL_CONDITION",
    "TK_SQL_CONSTRAINT",
    "TK_SQL_CONTINUE",
    "TK_SQL_CONVERT",
    "TK_SQL_CREATE",
    "TK_SQL_CROSS",
    "TK_SQL_CURRENT_DATE",
    "TK_SQL_CURRENT_TIME",
    "TK_SQL_CURRENT_TIMESTAMP",
    "TK_SQL_CURRENT_USER",
    "TK_SQL_CURSOR",
    "TK_SQL_DATABASE",
    "TK_SQL_DATABASES",
    "TK_SQL_DATE",
    "TK_SQL_DAY_HOUR",
    "TK_SQL_DAY_MICROSECOND",
    "TK_SQL_DAY_MINUTE",
    "TK_SQL_DAY_SECOND",
    "TK_SQL_DEC",
    "TK_SQL_DECIMAL",
    "TK_SQL_DECLARE",
    "TK_SQL_DEFAULT",
    "TK_SQL_DELAYED",
    "TK_SQL_DELETE",
    "TK_SQL_DESC",
    "TK_SQL_DESCRIBE",
    "TK_SQL_DETERMINISTIC",
    "TK_SQL_DISTINCT",
    "TK_SQL_DISTINCTROW",
    "TK_SQL_DIV",
    "TK_SQL_DOUBLE",
    "TK_SQL_DROP",
    "TK_SQL_DUAL",
    "TK_SQL_EACH",
    "TK_SQL_ELSE",
    "TK_SQL_ELSEIF",
    "TK_SQL_ENCLOSED",
    "TK_SQL_ENUM",
    "TK_SQL_ESCAPED",
    "TK_SQL_EXISTS",
    "TK_SQL_EXIT",
    "TK_SQL_EXPLAIN",
    "TK_SQL_FALSE",
    "TK_SQL_FETCH",
    "TK_SQL_FLOAT",
    "TK_SQL_FLOAT4",
    "TK_SQL_FLOAT8",
    "TK_SQL_FOR",
    "TK_SQL_FORCE",
    "TK_SQL_FOREIGN",
    "TK_SQL_FROM",
    "TK_SQL_FULLTEXT",
    "TK_SQL_GRANT",
    "TK_SQL_GROUP",
    "TK_SQL_HAVING",
    "TK_SQL_HIGH_PRIORITY",
    "TK_SQL_HOUR_MICROSECOND",
    "TK_SQL_HOUR_MINUTE",
    "TK_SQL_HOUR_SECOND",
    "TK_SQL_IF",
    "TK_SQL_IGNORE",
    "TK_SQL_IN",
    "TK_SQL_INDEX",
    "TK_SQL_INFILE",
    "TK_SQL_INNER",
    "TK_SQL_INOUT",
    "TK_SQL_INSENSITIVE",
    "TK_SQL_INSERT",
    "TK_SQL_INT",
    "TK_SQL_INT1",
    "TK_SQL_INT2",
    "TK_SQL_INT3",
    "TK_SQL_INT4",
    "TK_SQL_INT8",
    "TK_SQL_INTEGER",
    "TK_SQL_INTERVAL",
    "TK_SQL_INTO",
    "TK_SQL_IS",
    "TK_SQL_ITERATE",
    "TK_SQL_JOIN",
    "TK_SQL_KEY",
    "TK_SQL_KEYS",
    "TK_SQL_KILL",
    "TK_SQL_LEADING",
    "TK_SQL_LEAVE",
    "TK_SQL_LEFT",
    "TK_SQL_LIKE",
    "TK_SQL_LIMIT",
    "TK_SQL_LINEAR",
    "TK_SQL_LINES",
    "TK_SQL_LOAD",
    "TK_SQL_LOCALTIME",
    "TK_SQL_LOCALTIMESTAMP",
    "TK_SQL_LOCK",
    "TK_SQL_LONG",
    "TK_SQL_LONGBLOB",
    "TK_SQL_LONGTEXT",
    "TK_SQL_LOOP",
    "TK_SQL_LOW_PRIORITY",
    "TK_SQL_MASTER_SSL_VERIFY_SERVER_CERT",
    "TK_SQL_MATCH",
    "TK_SQL_MEDIUMBLOB",
    "TK_SQL_MEDIUMINT",
    "TK_SQL_MEDIUMTEXT",
    "TK_SQL_MIDDLEINT",
    "TK_SQL_MINUTE_MICROSECOND",
    "TK_SQL_MINUTE_SECOND",
    "TK_SQL_MOD",
    "TK_SQL_MODIFIES",
    "TK_SQL_NATURAL",
    "TK_SQL_NO",
    "TK_SQL_NOT",
    "TK_SQL_NO_WRITE_TO_BINLOG",
    "TK_SQL_NULL",
    "TK_SQL_NUMERIC",
    "TK_SQL_ON",
    "TK_SQL_OPTIMIZE",
    "TK_SQL_OPTION",
    "TK_SQL_OPTIONALLY",
    "TK_SQL_OR",
    "TK_SQL_ORDER",
    "TK_SQL_OUT",
    "TK_SQL_OUTER",
    "TK_SQL_OUTFILE",
    "TK_SQL_PRECISION",
    "TK_SQL_PRIMARY",
    "TK_SQL_PROCEDURE",
    "TK_SQL_PURGE",
    "TK_SQL_RANGE",
    "TK_SQL_READ",
    "TK_SQL_READ_ONLY",
    "TK_SQL_READS",
    "TK_SQL_READ_WRITE",
    "TK_SQL_REAL",
    "TK_SQL_REFERENCES",
    "TK_SQL_REGEXP",
    "TK_SQL_RELEASE",
    "TK_SQL_RENAME",
    "TK_SQL_REPEAT",
    "TK_SQL_REPLACE",
    "TK_SQL_REQUIRE",
    "TK_SQL_RESTRICT",
    "TK_SQL_RETURN",
    "TK_SQL_REVOKE",
    "TK_SQL_RIGHT",
    "TK_SQL_RLIKE",
    "TK_SQL_SCHEMA",
    "TK_SQL_SCHEMAS",
    "TK_SQL_SECOND_MICROSECOND",
    "TK_SQL_SELECT",
    "TK_SQL_SENSITIVE",
    "TK_SQL_SEPARATOR",
    "TK_SQL_SET",
    "TK_SQL_SHOW",
    "TK_SQL_SMALLINT",
    "TK_SQL_SPATIAL",
    "TK_SQL_SPECIFIC",
    "TK_SQL_SQL",
    "TK_SQL_SQL_BIG_RESULT",
    "TK_SQL_SQL_CALC_FOUND_ROWS",
    "TK_SQL_SQLEXCEPTION",
    "TK_SQL_SQL_SMALL_RESULT",
    "TK_SQL_SQLSTATE",
    "TK_SQL_SQLWARNING",
    "TK_SQL_SSL",
    "TK_SQL_STARTING",
    "TK_SQL_STRAIGHT_JOIN",
    "TK_SQL_TABLE",
    "TK_SQL_TERMINATED",
    "TK_SQL_TEXT",
    "TK_SQL_THEN",
    "TK_SQL_TIME",
    "TK_SQL_TIMESTAMP",
    "TK_SQL_TINYBLOB",
    "TK_SQL_TINYINT",
    "TK_SQL_TINYTEXT",
    "TK_SQL_TO",
    "TK_SQL_TRAILING",
    "TK_SQL_TRIGGER",
    "TK_SQL_TRUE",
    "TK_SQL_UNDO",
    "TK_SQL_UNION",
    "TK_SQL_UNIQUE",
    "TK_SQL_UNLOCK",
    "TK_SQL_UNSIGNED",
    "TK_SQL_UPDATE",
    "TK_SQL_USAGE",
    "TK_SQL_USE",
    "TK_SQL_USING",
    "TK_SQL_UTC_DATE",
    "TK_SQL_UTC_TIME",
    "TK_SQL_UTC_TIMESTAMP",
    "TK_SQL_VALUES",
    "TK_SQL_VARBINARY",
    "TK_SQL_VARCHAR",
    "TK_SQL_VARCHARACTER",
    "TK_SQL_VARYING",
    "TK_SQL_WHEN",
    "TK_SQL_WHERE",
    "TK_SQL_WHILE",
    "TK_SQL_WITH",
    "TK_SQL_WRITE",
    "TK_SQL_X509",
    "TK_SQL_XOR",
    "TK_SQL_YEAR_MONTH",
    "TK_SQL_ZEROFILL",
    "TK_COMMENT_MYSQL",
    "TK_LAST_TOKEN",
)

TOKEN_IDS: dict[str, int] = {name: i for i, name in enumerate(TOKEN_NAMES)}
KEYWORDS: dict[bytes, int] = {
    name[len("TK_SQL_") :].encode(): i
    for i, name in enumerate(TOKEN_NAMES)
    if name.startswith("TK_SQL_")
}

TK_UNKNOWN = TOKEN_IDS["TK_UNKNOWN"]
TK_STRING = TOKEN_IDS["TK_STRING"]
TK_COMMENT = TOKEN_IDS["TK_COMMENT"]
TK_COMMENT_MYSQL = TOKEN_IDS["TK_COMMENT_MYSQL"]
TK_LITERAL = TOKEN_IDS["TK_LITERAL"]
TK_FUNCTION = TOKEN_IDS["TK_FUNCTION"]
TK_INTEGER = TOKEN_IDS["TK_INTEGER"]
TK_FLOAT = TOKEN_IDS["TK_FLOAT"]
TK_DOT = TOKEN_IDS["TK_DOT"]

# Operators, longest first so that the first match is the longest one.
OPERATORS: tuple[tuple[bytes, str], ...] = (
    (b"<=", "TK_LE"),
    (b">=", "TK_GE"),
    (b"<>", "TK_NE"),
    (b"!=", "TK_NE"),
    (b":=", "TK_ASSIGN"),
    (b"&&", "TK_LOGICAL_AND"),
    (b"||", "TK_LOGICAL_OR"),
    (b"<", "TK_LT"),
    (b">", "TK_GT"),
    (b"=", "TK_EQ"),
    (b"(", "TK_OBRACE"),
    (b")", "TK_CBRACE"),
    (b";", "TK_SEMICOLON"),
    (b",", "TK_COMMA"),
    (b".", "TK_DOT"),
    (b"*", "TK_STAR"),
    (b"+", "TK_PLUS"),
    (b"-", "TK_MINUS"),
    (b"/", "TK_DIV"),
    (b"&", "TK_BITWISE_AND"),
    (b"|", "TK_BITWISE_OR"),
    (b"^", "TK_BITWISE_XOR"),
)

_WS = b" \t\r\n\f\v"
_BLANK = b" \t"
_IDENT_PART = rb"[0-9]*[A-Za-z_@][A-Za-z0-9_@]*"
_RE_FLOAT_EXP = re.compile(rb"[0-9]+(?:\.[0-9]+)?[eE][-+]?[0-9]+")
_RE_FLOAT_DOT = re.compile(rb"[0-9]*\.[0-9]+")
_RE_INTEGER = re.compile(rb"[0-9]+")
_RE_IDENT = re.compile(_IDENT_PART + rb"(?:\." + _IDENT_PART + rb"){0,2}")


def _quoted(sql: bytes, pos: int) -> tuple[bytes, int]:
    """Content of the quoted token starting at pos, and the position after it."""
    quote = sql[pos]
    out = bytearray()
    i = pos + 1
    n = len(sql)
    while i < n:
        c = sql[i]
        if c == 0x5C:  # backslash: keep it and the next byte verbatim
            out += sql[i : i + 2]
            i += 2
            continue
        if c == quote:
            if i + 1 < n and sql[i + 1] == quote:
                out.append(quote)
                i += 2
                continue
            return bytes(out), i + 1
        out.append(c)
        i += 1
    return bytes(out), n


def tokenize(sql: bytes) -> list[tuple[int, bytes]]:
    """Split a query into (token_id, text) pairs, as mysql.tokenizer does."""
    tokens: list[tuple[int, bytes]] = []
    n = len(sql)
    pos = 0
    while pos < n:
        c = sql[pos : pos + 1]
        if c in _WS:
            pos += 1
            continue
        if sql.startswith(b"/*", pos):
            mysql = sql.startswith(b"/*!", pos)
            start = pos + (3 if mysql else 2)
            end = sql.find(b"*/", start)
            stop = n if end < 0 else end
            tokens.append((TK_COMMENT_MYSQL if mysql else TK_COMMENT, sql[start:stop]))
            pos = n if end < 0 else end + 2
            continue
        if sql.startswith(b"--", pos) and pos + 2 < n:
            nxt = sql[pos + 2 : pos + 3]
            if nxt == b"\n":
                tokens.append((TK_COMMENT, b""))
                pos += 3
                continue
            if nxt in _BLANK:
                end = sql.find(b"\n", pos + 3)
                stop = n if end < 0 else end
                tokens.append((TK_COMMENT, sql[pos + 3 : stop]))
                pos = n if end < 0 else end + 1
                continue
        if c in (b"'", b'"', b"`"):
            text, pos = _quoted(sql, pos)
            tokens.append((TK_LITERAL if c == b"`" else TK_STRING, text))
            continue
        # numbers and identifiers: longest match, ties go to the earlier rule
        best: tuple[int, int] | None = None  # (length, rule)
        for rule, regex in enumerate((_RE_FLOAT_EXP, _RE_FLOAT_DOT, _RE_INTEGER, _RE_IDENT)):
            m = regex.match(sql, pos)
            if m and (best is None or m.end() - pos > best[0]):
                best = (m.end() - pos, rule)
        if best is not None:
            length, rule = best
            lexeme = sql[pos : pos + length]
            pos += length
            if rule < 2:
                tokens.append((TK_FLOAT, lexeme))
            elif rule == 2:
                tokens.append((TK_INTEGER, lexeme))
            else:
                parts = lexeme.split(b".")
                is_call = sql[pos : pos + 1] == b"("
                for k, part in enumerate(parts):
                    if k:
                        tokens.append((TK_DOT, b"."))
                    if is_call and k == len(parts) - 1:
                        tokens.append((TK_FUNCTION, part))
                    else:
                        tokens.append((KEYWORDS.get(part.upper(), TK_LITERAL), part))
            continue
        for op, name in OPERATORS:
            if sql.startswith(op, pos):
                tokens.append((TOKEN_IDS[name], op))
                pos += len(op)
                break
        else:
            tokens.append((TK_UNKNOWN, c))
            pos += 1
    return tokens
