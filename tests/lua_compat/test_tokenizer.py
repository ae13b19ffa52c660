"""mysql.tokenizer from Lua: token ids/names/text, the token lists, normalize (8.3, App. A)."""

from __future__ import annotations

import pytest

from lua_compat import LuaRuntime
from lua_compat.modules.tokenizer import TOKEN_NAMES

DUMP = """
local toks = tokenizer.tokenize(...)
local out = {}
for i = 1, #toks do
  local t = toks[i]
  out[#out + 1] = t.token_id .. " " .. t.token_name .. " [" .. t.text .. "]"
end
return table.concat(out, "\\n")
"""


@pytest.fixture(scope="module", autouse=True)
def _load(lua: LuaRuntime) -> None:
    lua.execute('require("mysql.tokenizer")')


def tokens(lua: LuaRuntime, sql: bytes) -> list[tuple[int, str, bytes]]:
    out: list[tuple[int, str, bytes]] = []
    dump = lua.execute(DUMP, sql)
    for line in dump.split(b"\n") if dump else []:
        tid, name, text = line.split(b" ", 2)
        out.append((int(tid), name.decode(), text[1:-1]))
    return out


def ids(lua: LuaRuntime, sql: bytes) -> list[tuple[int, bytes]]:
    return [(tid, text) for tid, _, text in tokens(lua, sql)]


def test_name_table_matches_appendix_a(lua: LuaRuntime) -> None:
    assert len(TOKEN_NAMES) == 263
    for tid, name in [
        (0, "TK_UNKNOWN"),
        (7, "TK_STRING"),
        (9, "TK_LITERAL"),
        (10, "TK_FUNCTION"),
        (27, "TK_LOGICAL_OR"),
        (28, "TK_SQL_ACCESSIBLE"),
        (105, "TK_SQL_FROM"),
        (154, "TK_SQL_MASTER_SSL_VERIFY_SERVER_CERT"),
        (204, "TK_SQL_SELECT"),
        (260, "TK_SQL_ZEROFILL"),
        (261, "TK_COMMENT_MYSQL"),
        (262, "TK_LAST_TOKEN"),
    ]:
        assert TOKEN_NAMES[tid] == name
        assert lua.eval("tokenizer.token_names[...]", tid) == name.encode()
        assert lua.eval("tokenizer.token_ids[...]", name.encode()) == tid


def test_reference_example_select_count(lua: LuaRuntime) -> None:
    assert tokens(lua, b"select count(*) from mysql.user") == [
        (204, "TK_SQL_SELECT", b"select"),
        (10, "TK_FUNCTION", b"count"),
        (16, "TK_OBRACE", b"("),
        (19, "TK_STAR", b"*"),
        (17, "TK_CBRACE", b")"),
        (105, "TK_SQL_FROM", b"from"),
        (9, "TK_LITERAL", b"mysql"),
        (13, "TK_DOT", b"."),
        (9, "TK_LITERAL", b"user"),
    ]


def test_reference_example_comments(lua: LuaRuntime) -> None:
    assert ids(lua, b"/* comment */select /*! 1 */") == [
        (8, b" comment "),
        (204, b"select"),
        (261, b" 1 "),
    ]
    assert ids(lua, b"/*!50000 1 + */") == [(261, b"50000 1 + ")]
    assert ids(lua, b"select /* open") == [(204, b"select"), (8, b" open")]


def test_dash_comments_and_hash(lua: LuaRuntime) -> None:
    assert ids(lua, b"select 1 -- rest of line\nfrom") == [
        (204, b"select"),
        (11, b"1"),
        (8, b"rest of line"),
        (105, b"from"),
    ]
    assert ids(lua, b"--\nselect") == [(8, b""), (204, b"select")]
    assert ids(lua, b"1--2") == [(11, b"1"), (21, b"-"), (21, b"-"), (11, b"2")]
    assert ids(lua, b"# x") == [(0, b"#"), (9, b"x")]


def test_quotes(lua: LuaRuntime) -> None:
    assert ids(lua, b"'it''s' \"a\\\"b\" `col``x` 'mixed\"q' 'open") == [
        (7, b"it's"),
        (7, b'a\\"b'),
        (9, b"col`x"),
        (7, b'mixed"q'),
        (7, b"open"),
    ]


def test_numbers_and_identifiers(lua: LuaRuntime) -> None:
    assert ids(lua, b"1 1.5 .5 1.5e3 2e-4 1e5 1abc 12e abc_1 @var") == [
        (11, b"1"),
        (12, b"1.5"),
        (12, b".5"),
        (12, b"1.5e3"),
        (12, b"2e-4"),
        (12, b"1e5"),
        (9, b"1abc"),
        (9, b"12e"),
        (9, b"abc_1"),
        (9, b"@var"),
    ]


def test_keywords_case_insensitive_and_functions(lua: LuaRuntime) -> None:
    assert ids(lua, b"SeLeCt IF(1) count (x) db.t.c db.f()") == [
        (204, b"SeLeCt"),
        (10, b"IF"),
        (16, b"("),
        (11, b"1"),
        (17, b")"),
        (9, b"count"),
        (16, b"("),
        (9, b"x"),
        (17, b")"),
        (9, b"db"),
        (13, b"."),
        (9, b"t"),
        (13, b"."),
        (9, b"c"),
        (9, b"db"),
        (13, b"."),
        (10, b"f"),
        (16, b"("),
        (17, b")"),
    ]
    assert ids(lua, b"t.select") == [(9, b"t"), (13, b"."), (204, b"select")]


def test_operators(lua: LuaRuntime) -> None:
    got = tokens(lua, b"<= >= <> != < > = := ; , * + / & && | || ^ ! % ? :")
    assert [name for _, name, _ in got] == [
        "TK_LE",
        "TK_GE",
        "TK_NE",
        "TK_NE",
        "TK_LT",
        "TK_GT",
        "TK_EQ",
        "TK_ASSIGN",
        "TK_SEMICOLON",
        "TK_COMMA",
        "TK_STAR",
        "TK_PLUS",
        "TK_DIV",
        "TK_BITWISE_AND",
        "TK_LOGICAL_AND",
        "TK_BITWISE_OR",
        "TK_LOGICAL_OR",
        "TK_BITWISE_XOR",
        "TK_UNKNOWN",
        "TK_UNKNOWN",
        "TK_UNKNOWN",
        "TK_UNKNOWN",
    ]
    assert ids(lua, "é".encode()) == [(0, b"\xc3"), (0, b"\xa9")]


def test_token_list_userdata(lua: LuaRuntime) -> None:
    assert (
        lua.execute(
            """
        local toks = tokenizer.tokenize("select 1")
        assert(type(toks) == "userdata" and type(toks[1]) == "userdata")
        assert(#toks == 2)
        assert(toks[0] == nil and toks[3] == nil and toks[-1] == nil)
        toks[1] = nil
        assert(toks[1] == nil and toks[2].text == "1")
        local ok, err = pcall(function() toks[2] = "x" end)
        assert(not ok)
        local ok2, err2 = pcall(function() return toks[2].nosuch end)
        assert(not ok2 and err2:find("has no nosuch field", 1, true))
        return #tokenizer.tokenize("")
        """
        )
        == 0
    )


def test_tokenize_needs_a_string(lua: LuaRuntime) -> None:
    ok, _ = lua.eval("pcall(tokenizer.tokenize, {})")
    assert ok is False


@pytest.mark.parametrize(
    ("sql", "normalized"),
    [
        (
            b"SELECT a, 'x', 1, 2.5 FROM `t` WHERE b = \"y\"",
            b"SELECT `a` , ? , ? , ? FROM `t` WHERE `b` = ?",
        ),
        (b"select * from t where id = 1 /* note */", b"SELECT * FROM `t` WHERE `id` = ?"),
        (b"select /*!40001 SQL_NO_CACHE */ 1", b"SELECT /*!40001 SQL_NO_CACHE */ ?"),
        (b"SET @x := 5", b"SET @x := ?"),
        (b"commit", b"commit"),
        (b"START TRANSACTION", b"START TRANSACTION"),
        (b"select count(*) from mysql.user", b"SELECT count ( * ) FROM `mysql` . `user`"),
        (b"rollback; select commit", b"rollback ; SELECT `commit`"),
    ],
)
def test_normalize(lua: LuaRuntime, sql: bytes, normalized: bytes) -> None:
    assert lua.eval("tokenizer.normalize(tokenizer.tokenize(...))", sql) == normalized


def test_normalize_same_shape_same_result(lua: LuaRuntime) -> None:
    a = lua.eval("tokenizer.normalize(tokenizer.tokenize(...))", b"select * from t where x=1")
    b = lua.eval("tokenizer.normalize(tokenizer.tokenize(...))", b"SELECT *\nFROM t WHERE x = 42")
    assert a == b
