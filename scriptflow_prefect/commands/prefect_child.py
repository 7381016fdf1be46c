"""`python -m scriptflow_prefect.commands.prefect_child server start ...`: Prefect's own CLI,
with its API auth strings kept out of /proc/<pid>/environ.

Prefect reads them from its environment, where any process of the account (a script, when the
sandbox cannot stop reading /proc, e.g. as root) could read the initial block; they stay in
`os.environ` for Prefect, and are wiped from that block before Prefect starts.

It also stops when the ScriptFlow process that started it is gone (`platform/lifeline.py`):
as on SIGTERM (uvicorn finishes its requests, Prefect stops its services), and for good after
a grace period, so that no Prefect server outlives its `scriptflow up`."""

from __future__ import annotations

import os
import runpy
import signal
import sys
import time

from scriptflow_prefect.commands.prefect_sqlite import install_sqlite_patch
from scriptflow_prefect.platform.lifeline import on_parent_exit
from scriptflow_prefect.platform.secret_env import hide_from_proc

AUTH_VARIABLES = ("PREFECT_SERVER_API_AUTH_STRING", "PREFECT_API_AUTH_STRING")
ORPHAN_GRACE_SECONDS = 8.0


def _stop_orphaned() -> None:
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(ORPHAN_GRACE_SECONDS)  # a request or a service that does not finish
    os._exit(1)


def main() -> None:
    on_parent_exit(_stop_orphaned)
    hide_from_proc(AUTH_VARIABLES)
    install_sqlite_patch()  # before Prefect builds its app: no 503 stalls in a burst
    sys.argv = ["prefect", *sys.argv[1:]]
    runpy.run_module("prefect", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
