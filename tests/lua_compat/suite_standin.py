"""A stand-in for ``mysql-proxy`` that the suite runner's own tests start.

It takes mysql-proxy's ``--key=value`` options, records its argv and the environment
variables the runner must pass in a JSON file (``STANDIN_RECORD``), listens on
``--proxy-address``, writes ``--pid-file`` once listening, and answers like a tiny MySQL
server: a greeting, OK to the login, OK to every command. Not a test module (no
``test_`` prefix); run as a script.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import struct
import sys

CLIENT_LONG_PASSWORD = 0x1
CLIENT_CONNECT_WITH_DB = 0x8
CLIENT_PROTOCOL_41 = 0x200
CLIENT_TRANSACTIONS = 0x2000
CLIENT_SECURE_CONNECTION = 0x8000
CAPABILITIES = (
    CLIENT_LONG_PASSWORD
    | CLIENT_CONNECT_WITH_DB
    | CLIENT_PROTOCOL_41
    | CLIENT_TRANSACTIONS
    | CLIENT_SECURE_CONNECTION
)
SERVER_STATUS_AUTOCOMMIT = 0x2


def packet(sequence_id: int, payload: bytes) -> bytes:
    return struct.pack("<I", len(payload))[:3] + bytes([sequence_id]) + payload


def greeting() -> bytes:
    return (
        b"\x0a5.0.99-standin\x00"
        + struct.pack("<I", 1)
        + b"abcdefgh\x00"
        + struct.pack("<HBH", CAPABILITIES & 0xFFFF, 8, SERVER_STATUS_AUTOCOMMIT)
        + b"\x00" * 13
        + b"ijklmnopqrst\x00"
    )


OK = b"\x00\x00\x00" + struct.pack("<HH", SERVER_STATUS_AUTOCOMMIT, 0)
COM_QUIT = 1


async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(packet(0, greeting()))
    try:
        while True:
            header = await reader.readexactly(4)
            body = await reader.readexactly(int.from_bytes(header[:3], "little"))
            if body[:1] == bytes([COM_QUIT]):
                break
            writer.write(packet(header[3] + 1, OK))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    writer.close()


async def main(argv: list[str]) -> None:
    options: dict[str, list[str]] = {}
    for arg in argv:
        key, _, value = arg.removeprefix("--").partition("=")
        options.setdefault(key, []).append(value)
    record = os.environ.get("STANDIN_RECORD")
    if record:
        with open(record, "a") as f:
            env = {k: os.environ.get(k) for k in ("LUA_PATH", "MYSQL_PROXY_VERSION")}
            f.write(json.dumps({"argv": argv, "env": env, "cwd": os.getcwd()}) + "\n")
    host, _, port = options["proxy-address"][0].rpartition(":")
    server = await asyncio.start_server(serve, host or "127.0.0.1", int(port))
    with open(options["pid-file"][0], "w") as f:
        f.write(f"{os.getpid()}\n")
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with server:
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
