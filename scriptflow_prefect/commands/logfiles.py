"""Log files: one rotating file per component under SCRIPTFLOW_HOME/logs."""

from __future__ import annotations

import logging
from logging.handlers import RotatingFileHandler

from scriptflow_prefect.platform.settings import Settings


def setup_logging(settings: Settings, component: str) -> None:
    """Console and a rotating file per component under SCRIPTFLOW_HOME/logs."""
    settings.logs_dir.mkdir(parents=True, exist_ok=True)
    handler = RotatingFileHandler(
        settings.logs_dir / f"{component}.log", maxBytes=5_000_000, backupCount=3, encoding="utf-8"
    )
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for name in ("scriptflow", "uvicorn", "uvicorn.error"):
        logging.getLogger(name).addHandler(handler)
    logging.getLogger("scriptflow").setLevel(logging.INFO)
