"""The first lines of a run's output, sent to Prefect's log table cheaply.

Prefect's logging path (logger → APILogHandler → a validated `LogCreate` per record) costs
~0.1 ms a line in this process, and an output flood shares the CPU with the script: 20 000
lines made a run ~2.5 s longer. The same log records, built directly as the JSON Prefect's
log worker sends, cost a few µs; the worker batches them to the API as before. The records
are the same as the logger's: `prefect.flow_runs.stdout` at INFO, `.stderr` at WARNING.

Bounded in bytes too (PREFECT_LOG_BYTE_LIMIT a run; the flow bounds the lines): Prefect's
database sits on the same disk as the output, and 20 000 lines of 1 MB each would fill it
long before the output file's own disk-full guard (platform/disk_space.py) stopped the run.

Example::

    sink = PrefectLogSink(flow_run.id)
    sink.send(ts, "stdout", ["first line", "second line"])
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime

import orjson

LEVELS = {"stdout": logging.INFO, "stderr": logging.WARNING}
PREFECT_LOG_BYTE_LIMIT = 4_000_000
MORE_IN_FILE = "… more output is kept in ScriptFlow's output file for this run"


class PrefectLogSink:
    def __init__(self, flow_run_id) -> None:
        from prefect.settings import (
            PREFECT_LOGGING_TO_API_ENABLED,
            PREFECT_LOGGING_TO_API_MAX_LOG_SIZE,
        )

        self.enabled = bool(PREFECT_LOGGING_TO_API_ENABLED.value())
        # Room for the record's other fields; Prefect truncates what is longer the same way.
        self._max_text = max(PREFECT_LOGGING_TO_API_MAX_LOG_SIZE.value() - 400, 100)
        self._run = str(flow_run_id)
        self._room = PREFECT_LOG_BYTE_LIMIT

    def send(self, ts: datetime, stream: str, texts: Sequence[str]) -> None:
        if not self.enabled or not texts or self._room < 0:
            return
        from prefect.logging.handlers import APILogWorker

        worker = APILogWorker.instance()
        stamp = ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        # Every field but the message is the same for the whole chunk. Joining the parts also
        # gives each record a bytes object of its exact size: orjson's own output holds ~4 KiB
        # for a short record, and 20 000 queued records took +85 MB instead of +12 MB.
        head = (
            orjson.dumps(
                {
                    "name": f"prefect.flow_runs.{stream}",
                    "level": LEVELS.get(stream, logging.INFO),
                    "timestamp": stamp,
                    "flow_run_id": self._run,
                    "task_run_id": None,
                }
            )[:-1]
            + b',"message":'
        )
        for text in texts:
            message = orjson.dumps(text)
            while len(message) > self._max_text:  # bytes as sent: "\u0001" is 6 of them
                text = text[: len(text) * self._max_text // len(message) - 20]
                message = orjson.dumps(text + "... [truncated]")
            self._room -= len(message)
            if self._room < 0:
                message = orjson.dumps(MORE_IN_FILE)
            worker.send(b"".join((head, message, b"}")))
            if self._room < 0:
                return
