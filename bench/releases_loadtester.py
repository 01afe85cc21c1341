"""The built-in load tester's generator: how much load pitwall's in-process ``hey`` sends, and how closely it
keeps a ``-q`` rate.

    .venv/bin/python bench/releases_loadtester.py [--seconds 5]

Against a local asyncio HTTP server answering 200 in the same process (so the
figure is the generator's and the server's cost together, on one event loop):
unthrottled ``-c 10``, then ``-q 10 -c 2`` (Flagger's docs' command, 20/s
expected). Prints requests, seconds and requests per second. Not part of the
tests.
"""

from __future__ import annotations

import argparse
import asyncio

from pitwall.releases.loadtester import parse_hey, run_hey


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while await reader.readline():
            while (await reader.readline()) not in (b"\r\n", b""):
                pass
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):  # the bench's end cancels idle connections
        pass
    finally:
        writer.close()


async def main(seconds: float) -> None:
    server = await asyncio.start_server(_serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    for flags, expect in ((f"-z {seconds:g}s -c 10", None), (f"-z {seconds:g}s -q 10 -c 2", 20.0)):
        res = await run_hey(parse_hey(f"hey {flags} http://127.0.0.1:{port}/"))
        rps = res.total / res.seconds
        extra = f" (expected {expect:g}/s, {100 * rps / expect:.0f}%)" if expect else ""
        print(f"hey {flags}: {res.total} requests, {res.errors} errors, {res.seconds:.2f}s, {rps:.0f}/s{extra}")
    server.close()


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=5.0)
    asyncio.run(main(p.parse_args().seconds))
