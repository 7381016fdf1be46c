"""Loaded by Prefect through the `prefect.collections` entry point (server and workers).

Importing the modules registers ScriptFlow's block types and worker type with Prefect."""

from scriptflow_prefect import blocks as _blocks  # noqa: F401
from scriptflow_prefect.runs import worker as _worker  # noqa: F401
