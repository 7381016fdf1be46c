"""Names that vulture cannot see used: called by a framework or by name. Patterns (routes,
validators, hooks) are in pyproject.toml [tool.vulture]; single names are here."""

# ruff: noqa: B018, F821
# uvicorn.Server hook; Prefect worker and block hooks; ctypes structure fields.
capture_signals
_give_worker_labels_to_flow_run
notify
LimitFlags
# Arguments Prefect passes by keyword: a worker's run(configuration=...), a flow parameter.
configuration
script_name
# Fields of runs.models.Run that only the API serves.
script_version
message_code
message_params
files_complete  # and the run page
# SQLAlchemy columns written and read by the ORM and SQL only.
seen_at
author_id

# Read by the email templates (digest-body.*).
average_seconds
# io.RawIOBase methods the io machinery calls (execution/output_hook_module.py).
writable
isatty
# STARTUPINFO fields Windows reads (execution/windows_logon.py).
cb
dwFlags
hStdInput
hStdOutput
hStdError
# Held, never read: an idle connection that keeps SQLite's WAL index (platform/db.py).
_keeper
