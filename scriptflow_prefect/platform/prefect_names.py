"""Names in Prefect that ScriptFlow writes and reads: flows, pool, tags, labels, state names."""

EXIT_CODE_LABEL = "scriptflow.exit_code"
MESSAGE_LABEL = "scriptflow.message"  # {"code", "params", "text"}: runs/messages.py
TIMED_OUT_STATE_NAME = "TimedOut"
SKIPPED_STATE_NAME = "Skipped"


FLOW_NAME = "run_script"


WORK_POOL = "scriptflow"


TAG = "scriptflow"


ENTRYPOINT = "scriptflow_prefect.flows.run_script:run_script"


def script_tag(script_id: int) -> str:
    return f"script-{script_id}"


# -- notifications: email blocks, automations, the digest deployments, events ---------------
EMAIL_TAG = "scriptflow-email"  # on every automation ScriptFlow keeps for emails


CREDENTIALS_BLOCK = "scriptflow-smtp"


EMAIL_BLOCK = "scriptflow-email"


DIGEST_FLOW = "send_digest"


DIGEST_ENTRYPOINT = "scriptflow_prefect.flows.send_digest:send_digest"


DIGEST_TAG = "scriptflow-digest"  # not `scriptflow`: digest runs are not script runs


# -- history: run lists that stay fast at 100 000 runs, summaries, retention ------------------
# Prefect's tag filters are JSON scans on SQLite (~2.5 µs a run, for every run in the table);
# the history uses indexed columns wherever it can: the flow (run_script), the deployments of
# the scripts asked for, state type and expected start time. Tags are used only for the
# trigger, and for scripts whose deployments ScriptFlow does not know (history.py).
CLEAN_FLOW = "clean_history"


CLEAN_ENTRYPOINT = "scriptflow_prefect.flows.clean_history:clean_history"


CLEAN_DEPLOYMENT = "daily"


SCRIPTFLOW_FLOWS = (FLOW_NAME, "send_digest", CLEAN_FLOW)  # what retention cleans
