"""`python -m scriptflow_prefect.commands.prefect_child server start ...`: Prefect's own CLI,
with its API auth strings kept out of /proc/<pid>/environ.

Prefect reads them from its environment, where any process of the account (a script, when the
sandbox cannot stop reading /proc, e.g. as root) could read the initial block; they stay in
`os.environ` for Prefect, and are wiped from that block before Prefect starts."""

from __future__ import annotations

import runpy
import sys

from scriptflow_prefect.platform.secret_env import hide_from_proc

AUTH_VARIABLES = ("PREFECT_SERVER_API_AUTH_STRING", "PREFECT_API_AUTH_STRING")


def main() -> None:
    hide_from_proc(AUTH_VARIABLES)
    sys.argv = ["prefect", *sys.argv[1:]]
    runpy.run_module("prefect", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
