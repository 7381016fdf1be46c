"""The retention period as the Settings page stores it (an AppSetting), readable without
importing Prefect: `scriptflow up` reads it before Prefect's server and client are set up."""

from __future__ import annotations

import json

RETENTION_KEY = "retention"
MIN_DAYS, MAX_DAYS = 1, 3650

__all__ = ["MAX_DAYS", "MIN_DAYS", "RETENTION_KEY", "stored_retention_days"]


def stored_retention_days(settings) -> int | None:
    """The Settings page's period in days, or None if it was never set (or no database)."""
    from sqlalchemy import text

    from scriptflow_prefect.platform.db import make_engine

    engine = make_engine(settings.sqlalchemy_url)
    try:
        with engine.connect() as conn:
            value = conn.execute(
                text("SELECT value FROM app_settings WHERE key = :k"), {"k": RETENTION_KEY}
            ).scalar()
    except Exception:  # no database or no table yet (first start)
        return None
    finally:
        engine.dispose()
    if isinstance(value, str):
        value = json.loads(value)
    days = value.get("days") if isinstance(value, dict) else None
    return days if isinstance(days, int) and MIN_DAYS <= days <= MAX_DAYS else None
