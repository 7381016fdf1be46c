"""Names shared by the flow (which writes them) and the gateway (which reads them)."""

EXIT_CODE_LABEL = "scriptflow.exit_code"
TIMED_OUT_STATE_NAME = "TimedOut"
RETRY_TAG = "retry"
SKIPPED_STATE_NAME = "Skipped"
