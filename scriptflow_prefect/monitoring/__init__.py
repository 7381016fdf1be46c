"""Health of the parts: Prefect's API, workers."""
