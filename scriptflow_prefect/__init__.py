"""ScriptFlow: upload, schedule and watch scripts; a plugin for Prefect 3."""

__version__ = "0.1.0"
