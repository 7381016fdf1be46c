"""The simple schedule form, its Prefect schedules, the preview and the scheduler's state."""
