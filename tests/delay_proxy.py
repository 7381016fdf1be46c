"""A TCP proxy on 127.0.0.1 that holds each HTTP request `delay` seconds before passing it
on: a slow Prefect API (a loaded SQLite, a far-away server) in front of a real one.

A request is what the client sends after the server's last answer on that connection
(HTTP/1.1 without pipelining, as httpx and Prefect's client speak), so each call is held
once, whatever its size. `delay` may change while it runs.

Example::

    with DelayProxy(target_port=4200) as proxy:
        proxy.delay = 5.0          # every call through 127.0.0.1:{proxy.port} now takes 5 s more
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import conftest
import httpx


class DelayProxy:
    def __init__(self, target_port: int, delay: float = 0.0):
        self.target_port = target_port
        self.delay = delay
        self.refuse = False  # True: Prefect is down (connections are closed at once)
        self.requests = 0
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.base_events.Server | None = None

    def __enter__(self) -> DelayProxy:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._handle, "127.0.0.1", self.port), self._loop
        ).result(10)
        return self

    def __exit__(self, *_exc) -> None:
        async def _stop():
            assert self._server is not None
            self._server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(_stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refuse:
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        answered = asyncio.Event()
        answered.set()  # nothing asked yet: the first bytes start a request

        async def requests() -> None:
            while data := await reader.read(65536):
                if answered.is_set():  # a new request on this connection
                    if self.refuse:  # kept-alive connections go down too
                        break
                    answered.clear()
                    self.requests += 1
                    if self.delay:
                        await asyncio.sleep(self.delay)
                up_writer.write(data)
                await up_writer.drain()
            up_writer.close()

        async def answers() -> None:
            while data := await up_reader.read(65536):
                answered.set()
                writer.write(data)
                await writer.drain()
            writer.close()

        try:
            await asyncio.gather(requests(), answers())
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
            up_writer.close()


@contextlib.contextmanager
def stack_behind_proxy(home: Path) -> Iterator[tuple[conftest.Stack, DelayProxy]]:
    """`scriptflow server` (Prefect alone) on `home`, the proxy in front of it, and
    `scriptflow up` on the same home pointed at the proxy (SCRIPTFLOW_PREFECT_API_URL):
    the overlay, its runner and the runs' flows all reach Prefect through the proxy."""
    home.mkdir(parents=True, exist_ok=True)
    port = conftest.free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SCRIPTFLOW_", "PREFECT_"))}
    env.update(SCRIPTFLOW_HOME=str(home), SCRIPTFLOW_PREFECT_PORT=str(port))
    with open(home / "server.out", "wb") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "scriptflow_prefect.commands.cli", "server"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        auth = home / "prefect" / "auth_string"
        conftest.wait_until(lambda: _answers(port, auth), 150, "scriptflow server answering")
        with DelayProxy(port) as proxy:
            stack = conftest.start_stack(
                home,
                {
                    "SCRIPTFLOW_PREFECT_API_URL": f"http://127.0.0.1:{proxy.port}/api",
                    "SCRIPTFLOW_PREFECT_AUTH_STRING": auth.read_text().strip(),
                },
            )
            try:
                for name in ("admin",):
                    r = stack.cli("token", "create", name)
                    assert r.returncode == 0, r.stderr
                    stack.tokens[name] = r.stdout.strip()
                yield stack, proxy
            finally:
                proxy.delay = 0
                conftest.stop_stack(stack)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(10)


def _answers(port: int, auth: Path) -> bool:
    if not auth.exists():
        return False
    user, _sep, password = auth.read_text().strip().partition(":")
    try:
        r = httpx.get(f"http://127.0.0.1:{port}/api/health", auth=(user, password), timeout=2)
    except httpx.HTTPError:
        return False
    return r.status_code == 200
