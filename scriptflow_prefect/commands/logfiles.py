"""Log files: one rotating file per component under SCRIPTFLOW_HOME/logs."""

from __future__ import annotations

import logging
import sys
from logging.handlers import RotatingFileHandler

from scriptflow_prefect.platform.settings import Settings


class _LogFile(RotatingFileHandler):
    """A log file that may be unwritable for a while (its disk full): says so once on stderr
    and drops records until it can write again, instead of a traceback per record."""

    failing = False
    _failed_now = False

    def emit(self, record: logging.LogRecord) -> None:
        self._failed_now = False
        super().emit(record)  # calls handleError on a failure
        if self.failing and not self._failed_now:
            self.failing = False  # it writes again: the next failure is reported again

    def handleError(self, record: logging.LogRecord) -> None:
        exc = sys.exc_info()[1]
        if not isinstance(exc, OSError):
            super().handleError(record)
            return
        self._failed_now = True
        if not self.failing:
            self.failing = True
            try:
                print(
                    f"scriptflow: cannot write the log file {self.baseFilename} ({exc}); "
                    "its records are dropped until it can",
                    file=sys.stderr,
                )
            except OSError:
                pass


def setup_logging(settings: Settings, component: str) -> None:
    """Console and a rotating file per component under SCRIPTFLOW_HOME/logs."""
    settings.logs_dir.mkdir(parents=True, exist_ok=True)
    handler = _LogFile(
        settings.logs_dir / f"{component}.log", maxBytes=5_000_000, backupCount=3, encoding="utf-8"
    )
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for name in ("scriptflow", "uvicorn", "uvicorn.error"):
        logging.getLogger(name).addHandler(handler)
    logging.getLogger("scriptflow").setLevel(logging.INFO)
