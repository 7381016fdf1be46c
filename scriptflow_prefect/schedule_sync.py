"""Between a script's simple schedule (overlay) and the schedules of its deployment (Prefect)."""

from __future__ import annotations

from typing import Any

from .models import Script


def prefect_schedules_for(script: Script) -> list:
    if not script.schedule:
        return []
    from .schedules import parse_spec, to_prefect_schedules

    return to_prefect_schedules(parse_spec(script.schedule))


def schedule_to_dict(script: Script) -> dict[str, Any] | None:
    if not script.schedule:
        return None
    from .schedules import next_runs, parse_spec

    spec = parse_spec(script.schedule)
    return {**spec.model_dump(), "next_runs": next_runs(spec)}
