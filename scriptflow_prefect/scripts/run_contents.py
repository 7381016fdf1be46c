"""A version's files as a run reads them: from the deployment's parameters, which a power
user may have edited in Prefect. Names are checked again and hashes verified (never run
altered bytes); what cannot be used is said in words (`Unusable`), for the run's message,
instead of an exception text naming the store's folders."""

from __future__ import annotations

from typing import Any

from scriptflow_prefect.platform.errors import ServiceError
from scriptflow_prefect.scripts import store
from scriptflow_prefect.scripts.files import check_name


class Unusable(ValueError):
    """The parameters name files that cannot be run; the text says which and why."""


def contents_for_run(
    filename: str, sha256: str, listed: list[dict[str, Any]] | None
) -> list[tuple[str, bytes]]:
    """[(name, bytes)], the entry point first, written under their own names (%~nx0,
    __file__); `listed`: every file of the version (None: the entry point alone)."""
    try:
        entry = check_name(filename)
        wanted = [(entry, sha256)] + [
            (check_name(f["name"]), f["sha256"]) for f in listed or [] if f.get("name") != entry
        ]
    except (ServiceError, KeyError, TypeError, AttributeError) as exc:
        raise Unusable(f"{type(exc).__name__}: {exc}"[:300]) from None
    contents = []
    for name, digest in wanted:
        try:
            contents.append((name, store.get_sync(str(digest))))
        except store.IntegrityError as exc:
            raise Unusable(f"{name}: {exc}") from None
        except (ValueError, OSError) as exc:  # not a hash, or no such object in the store
            shown = str(digest)[:16]
            raise Unusable(f"{name}: sha256 {shown}… is not in the script store") from exc
    return contents
