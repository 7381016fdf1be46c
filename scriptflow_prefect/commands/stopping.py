"""Ctrl-C and SIGTERM at any moment of a long-running command: one line, a clean stop, exit 0.

Installed first thing (cli.main, before the heavy imports), so that no moment of start-up is
left to Python's defaults (SIGTERM: killed without a word, leaving Prefect's server behind;
Ctrl-C: a KeyboardInterrupt traceback). The first signal prints one line and then:

- while starting (the default): raises `StopRequested` in the main thread, which interrupts
  whatever start-up waits on (a sleep, a socket, a child, an event loop);
- inside `deferred()` (starting a child and recording it): waits for the end of the block;
- inside `serving(stop)` (uvicorn, the worker's loop): calls `stop`, which asks the loop to end.

Later signals are ignored: the stop is under way, and cleanup must not be interrupted.

Example::

    STOP.install()
    try:
        with STOP.deferred():
            server = start_it()
        wait_for_it()                      # interrupted by StopRequested
        with STOP.serving(lambda: setattr(web, "should_exit", True)):
            web.run()
    except StopRequested:
        return 0
    finally:
        STOP.finishing()                   # cleanup: nothing raises from here on
        stop(server)
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Callable, Iterator

from scriptflow_prefect.platform.i18n import _

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequested(KeyboardInterrupt):
    """SIGINT or SIGTERM while starting. A KeyboardInterrupt, so that asyncio lets it out of
    any task it lands in, and `except Exception` blocks on the way do not swallow it."""


class StopSignals:
    def __init__(self) -> None:
        self.requested = False
        self._delivered = False  # StopRequested raised, or the serving loop told
        self._deferring = 0
        self._serving: Callable[[], object] | None = None
        self._finishing = False

    def install(self) -> None:
        for sig in SIGNALS:
            signal.signal(sig, self._handle)
        if sys.platform == "win32":  # Ctrl-Break, as a service manager sends it
            signal.signal(signal.SIGBREAK, self._handle)

    def _handle(self, signum: int, _frame: object) -> None:
        if self.requested:
            return  # already stopping: a second Ctrl-C must not break the cleanup
        self.requested = True
        _say(_("Stopping ScriptFlow (%(signal)s) …", signal=signal.Signals(signum).name))
        self._deliver()

    def _deliver(self) -> None:
        if self._delivered or self._finishing or self._deferring:
            return
        self._delivered = True
        if self._serving is not None:
            self._serving()
            return
        raise StopRequested

    def check(self) -> None:
        """Raise StopRequested if a stop was asked for and not delivered yet (a step that
        caught everything it met, say)."""
        if self.requested:
            self._deliver()

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """A block that must not be cut in half (a child started but not yet recorded)."""
        self._deferring += 1
        try:
            yield
        finally:
            self._deferring -= 1
        self.check()

    @contextlib.contextmanager
    def serving(self, stop: Callable[[], object]) -> Iterator[None]:
        """While a loop of ours serves: a stop request calls `stop` (from the signal handler:
        it must only set a flag or hand over to the loop thread-safely)."""
        self.check()
        self._serving = stop
        try:
            yield
        finally:
            self._serving = None

    def finishing(self) -> None:
        """Cleanup has begun: from now on a signal is only noted."""
        self._finishing = True


def _say(line: str) -> None:
    # Not print(): the main thread may be inside a write to the same stream, and a buffered
    # stream refuses a write from a signal handler in the middle of another ("reentrant call").
    with contextlib.suppress(OSError, ValueError, AttributeError):
        os.write(sys.stdout.fileno(), (line + "\n").encode(sys.stdout.encoding or "utf-8"))


STOP = StopSignals()
