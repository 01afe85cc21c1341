"""The built-in load tester's generator: how much load pitwall's in-process ``hey`` sends, and how closely it
keeps a ``-q`` rate.

    .venv/bin/python bench/releases_loadtester.py [--seconds 5] [--webhooks 300]

Against a local asyncio HTTP server answering 200 in the same process (so the
figure is the generator's and the server's cost together, on one event loop):
unthrottled ``-c 10``, then ``-q 10 -c 2`` (Flagger's docs' command, 20/s
expected). Prints requests, seconds and requests per second. With
``--webhooks N``: the Canary controller's webhook call to its own load
tester (``/gate/check``, N calls) in process, as the controller makes it,
and over HTTP to the same routes served by uvicorn on loopback in the same
process (what it cost before); p50 and p99 per call. Not part of the tests.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from pitwall.releases.loadtester import PREFIX, GateStore, LoadTester, loadtester_router, parse_hey, run_hey
from pitwall.releases.model import CanaryView
from pitwall.releases.settings import LoadTesterSettings
from pitwall.releases.webhooks import call_webhook, default_http, in_process_http


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


async def webhooks(n: int) -> None:
    import uvicorn
    from fastapi import FastAPI

    from pitwall.storage.revstore.sqlite import SqliteRevStore

    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteRevStore(Path(tmp) / "state.db", compact_interval_s=None)
        await store.start()
        lt = LoadTester(LoadTesterSettings(), GateStore(store))
        await lt.gates.set("podinfo.test", True)
        app = FastAPI()
        app.include_router(loadtester_router(lt))
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
        task = asyncio.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        hook = {"name": "gate", "url": f"http://127.0.0.1:{port}{PREFIX}/gate/check"}
        cd = CanaryView({"metadata": {"name": "podinfo", "namespace": "test"}, "spec": {}, "status": {}})
        own = in_process_http(app, [f"http://127.0.0.1:{port}"], PREFIX)
        for name, http in (("in process", own), ("over HTTP", default_http)):
            took = []
            for _ in range(n):
                t = time.perf_counter()
                await call_webhook(http, cd, "Progressing", hook)
                took.append((time.perf_counter() - t) * 1000)
            q = statistics.quantiles(took, n=100)
            print(f"webhook /gate/check {name}: {n} calls, p50 {q[49]:.2f} ms, p99 {q[98]:.2f} ms")
        server.should_exit = True
        await task
        await store.stop()


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--webhooks", type=int, default=0, help="time N webhook calls instead")
    args = p.parse_args()
    asyncio.run(webhooks(args.webhooks) if args.webhooks else main(args.seconds))
